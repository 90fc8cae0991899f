package advisory

import (
	"database/sql"
	"sync"
)

// pidCacheMax bounds the pid cache. Connections that database/sql closes on
// its own (idle and lifetime limits) are never forgotten one by one, so a
// full cache is emptied and learnt again, one acquire per connection.
const pidCacheMax = 1024

// pidCache remembers the backend pid of each driver connection that took a
// lock, so that later acquires on the same connection can send the lock
// alone, with Exec (no result set: less work for the driver, the server and
// database/sql), instead of asking for the pid again. It is used only for
// drivers whose connections keep one backend for life
// (sqltext.KeepsBackend); a pooler that breaks that is caught by the
// keepalive of the lease, which compares the backend that answers with this
// pid.
type pidCache struct {
	mu sync.Mutex
	m  map[any]int // driver connection -> backend pid
}

// driverConn returns the driver connection under conn, as a map key only:
// it is never used outside database/sql's lock.
func driverConn(conn *sql.Conn) any {
	var dc any
	_ = conn.Raw(func(c any) error { dc = c; return nil })
	return dc
}

// get returns the pid learnt for dc.
func (c *pidCache) get(dc any) (int, bool) {
	if c == nil || dc == nil {
		return 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	pid, ok := c.m[dc]
	return pid, ok
}

// put records dc's pid.
func (c *pidCache) put(dc any, pid int) {
	if c == nil || dc == nil || pid == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= pidCacheMax {
		c.m = make(map[any]int)
	}
	c.m[dc] = pid
}

// forget drops dc, whose connection is being closed.
func (c *pidCache) forget(dc any) {
	if c == nil || dc == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, dc)
}
