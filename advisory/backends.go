package advisory

import (
	"database/sql"
	"net"
	"sync"
	"sync/atomic"
)

// backendsMax bounds both tables of backends. Connections that database/sql
// closes on its own (idle and lifetime limits) are never forgotten one by
// one, so a full table is emptied (of what no live session uses) and learnt
// again.
const backendsMax = 1024

// backend is one server backend that sessions of a Locker run on. At most
// one live session may sit on a backend: a second means that a pooler gave
// two client connections the same server session, and is refused
// (ErrPooler).
type backend struct {
	pid      int
	sessions atomic.Int32 // live sessions on the backend: 0 or 1
}

// claim records a live session on b; false if one is there already.
func (b *backend) claim() bool { return b.sessions.CompareAndSwap(0, 1) }

// unclaim forgets the live session on b.
func (b *backend) unclaim() { b.sessions.Store(0) }

// connInfo is what a Locker knows of the server session under one driver
// connection: its backend, and, where the driver lets it be reached, its
// socket, through which a statement that does not end in time is
// interrupted (keepalives.sweep).
type connInfo struct {
	be    *backend
	nc    net.Conn    // nil if not reachable
	tuned atomic.Bool // the dead-peer settings are set (session.tune)
}

// backends finds the backend of a pid, and, when the driver keeps one
// backend per connection (sqltext.KeepsBackend), of each driver connection
// that took a lock, so that later statements on it can skip asking for the
// pid (a lock alone, with Exec: no result set, less work for the driver,
// the server and database/sql). A pooler that breaks that is caught by the
// keepalive, which compares the backend that answers with the one
// remembered here.
//
// The lookup by connection is on every acquire and takes no lock; the lookup
// by pid, once per connection (and on every acquire for other drivers),
// takes one.
type backends struct {
	perConn bool     // remember the session of each connection
	sockets bool     // find the socket of each connection (netConnOf)
	conns   sync.Map // driver connection -> *connInfo
	nconns  atomic.Int32

	mu    sync.Mutex
	byPID map[int]*backend
}

// driverConn returns the driver connection under conn, as a map key only:
// it is never used outside database/sql's lock.
func driverConn(conn *sql.Conn) any {
	var dc any
	_ = conn.Raw(func(c any) error { dc = c; return nil })
	return dc
}

// ofConn returns what was learnt of driver connection dc.
func (bs *backends) ofConn(dc any) *connInfo {
	if !bs.perConn || dc == nil {
		return nil
	}
	v, ok := bs.conns.Load(dc)
	if !ok {
		return nil
	}
	return v.(*connInfo)
}

// learn returns what is known of driver connection dc (nil if nothing can
// be), whose backend pid answered, and remembers it for dc.
func (bs *backends) learn(dc any, pid int) *connInfo {
	bs.mu.Lock()
	b := bs.byPID[pid]
	if b == nil {
		if bs.byPID == nil {
			bs.byPID = make(map[int]*backend)
		}
		if len(bs.byPID) >= backendsMax {
			for p, old := range bs.byPID {
				if old.sessions.Load() == 0 {
					delete(bs.byPID, p)
				}
			}
		}
		b = &backend{pid: pid}
		bs.byPID[pid] = b
	}
	bs.mu.Unlock()
	ci := &connInfo{be: b}
	if bs.sockets && dc != nil {
		ci.nc = netConnOf(dc)
	}
	if bs.perConn && dc != nil && pid != 0 {
		if bs.nconns.Add(1) > backendsMax {
			bs.conns.Clear()
			bs.nconns.Store(1)
		}
		if _, loaded := bs.conns.Swap(dc, ci); loaded {
			bs.nconns.Add(-1)
		}
	}
	return ci
}

// forget drops dc, whose connection is being closed.
func (bs *backends) forget(dc any) {
	if !bs.perConn || dc == nil {
		return
	}
	if _, ok := bs.conns.LoadAndDelete(dc); ok {
		bs.nconns.Add(-1)
	}
}
