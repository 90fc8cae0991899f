package advisory

import (
	"sync"
	"sync/atomic"
	"time"
)

// keepaliveTimer is the timer of a lease's keepalive. Timers are reused
// from lease to lease (a lease released before its first ping, the common
// case, gives its timer back), so that taking a lock costs no timer
// allocation.
type keepaliveTimer struct {
	t  *time.Timer
	ls atomic.Pointer[Lease] // the lease served; nil while pooled
}

var keepaliveTimers sync.Pool

// newKeepaliveTimer arms a timer that runs ls.tick after d.
func newKeepaliveTimer(ls *Lease, d time.Duration) *keepaliveTimer {
	if kt, ok := keepaliveTimers.Get().(*keepaliveTimer); ok {
		kt.ls.Store(ls)
		kt.t.Reset(d)
		return kt
	}
	kt := &keepaliveTimer{}
	kt.ls.Store(ls)
	kt.t = time.AfterFunc(d, kt.fire)
	return kt
}

// fire runs the tick of the lease served.
func (kt *keepaliveTimer) fire() {
	if ls := kt.ls.Load(); ls != nil {
		ls.tick()
	}
}

// reset arms the timer again, for the same lease.
func (kt *keepaliveTimer) reset(d time.Duration) { kt.t.Reset(d) }

// stop stops the timer. If that kept it from firing (so it never will for
// this lease) it goes back to the pool; if it already fired, its tick may
// still be running and it is left to the garbage collector.
func (kt *keepaliveTimer) stop() {
	if kt.t.Stop() {
		kt.ls.Store(nil)
		keepaliveTimers.Put(kt)
	}
}
