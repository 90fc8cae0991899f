package advisory

import (
	"database/sql"
	"net"
	"sync"
	"sync/atomic"
)

// backendsMax bounds both tables of backends. Connections that database/sql
// closes on its own (idle and lifetime limits) are never forgotten one by
// one, so a full table is emptied (of what no live lease uses) and learnt
// again.
const backendsMax = 1024

// backend is one server backend (session) that leases of a Locker run on.
// At most one live lease may sit on a backend: a second means that a pooler
// gave two client connections the same session, and is refused (ErrPooler).
type backend struct {
	pid    int
	leases atomic.Int32 // live leases on the backend: 0 or 1
}

// session is what a Locker knows of the server session under one driver
// connection: its backend, and, where the driver lets it be reached, its
// socket, through which a release that does not end in time is interrupted
// (keepalives.sweep).
type session struct {
	be *backend
	nc net.Conn // nil if not reachable
}

// claim records a live lease on b; false if one is there already.
func (b *backend) claim() bool { return b.leases.CompareAndSwap(0, 1) }

// unclaim forgets the live lease on b.
func (b *backend) unclaim() { b.leases.Store(0) }

// backends finds the backend of a pid, and, when the driver keeps one
// backend per connection (sqltext.KeepsBackend), of each driver connection
// that took a lock, so that later acquires on it can send the lock alone,
// with Exec (no result set: less work for the driver, the server and
// database/sql), instead of asking for the pid again. A pooler that breaks
// that is caught by the keepalive of the lease, which compares the backend
// that answers with the one remembered here.
//
// The lookup by connection is on every acquire and takes no lock; the lookup
// by pid, once per connection (and on every acquire for other drivers),
// takes one.
type backends struct {
	perConn bool     // remember the session of each connection
	sockets bool     // find the socket of each connection (netConnOf)
	conns   sync.Map // driver connection -> *session
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

// ofConn returns the session learnt for driver connection dc.
func (bs *backends) ofConn(dc any) (*session, bool) {
	if !bs.perConn || dc == nil {
		return nil, false
	}
	v, ok := bs.conns.Load(dc)
	if !ok {
		return nil, false
	}
	return v.(*session), true
}

// learn returns the session of driver connection dc (nil if not known),
// whose backend pid answered, and remembers it for dc.
func (bs *backends) learn(dc any, pid int) *session {
	bs.mu.Lock()
	b := bs.byPID[pid]
	if b == nil {
		if bs.byPID == nil {
			bs.byPID = make(map[int]*backend)
		}
		if len(bs.byPID) >= backendsMax {
			for p, old := range bs.byPID {
				if old.leases.Load() == 0 {
					delete(bs.byPID, p)
				}
			}
		}
		b = &backend{pid: pid}
		bs.byPID[pid] = b
	}
	bs.mu.Unlock()
	s := &session{be: b}
	if bs.sockets && dc != nil {
		s.nc = netConnOf(dc)
	}
	if bs.perConn && dc != nil && pid != 0 {
		if bs.nconns.Add(1) > backendsMax {
			bs.conns.Clear()
			bs.nconns.Store(1)
		}
		if _, loaded := bs.conns.Swap(dc, s); loaded {
			bs.nconns.Add(-1)
		}
	}
	return s
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
