package advisory

import (
	"sync"
	"time"
)

// keepalives schedules the keepalive pings of a Locker's leases on one
// shared timer instead of a timer per lease: taking a lock then costs a map
// insertion instead of a timer (whose arming can wake the runtime's network
// poller with a system call on every acquire). While any lease is held the
// timer fires every quarter of the keepalive interval and starts, each on a
// goroutine of its own, the pings that are due; so a lease is pinged between
// one and one and a quarter intervals after its grant or its last ping. With
// no lease held the timer stops.
type keepalives struct {
	mu     sync.Mutex
	due    map[*Lease]time.Time // when each watched lease pings next
	timer  *time.Timer
	armed  bool
	period time.Duration
}

// watch schedules ls's next ping one interval from now.
func (k *keepalives) watch(ls *Lease, interval time.Duration) {
	next := time.Now().Add(interval)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.due == nil {
		k.due = make(map[*Lease]time.Time)
		k.period = max(interval/4, time.Millisecond)
	}
	k.due[ls] = next
	if !k.armed {
		k.armed = true
		if k.timer == nil {
			k.timer = time.AfterFunc(k.period, k.sweep)
		} else {
			k.timer.Reset(k.period)
		}
	}
}

// unwatch cancels ls's next ping (a ping already started runs to its end).
func (k *keepalives) unwatch(ls *Lease) {
	k.mu.Lock()
	delete(k.due, ls)
	k.mu.Unlock()
}

// sweep starts the pings that are due and arms the next sweep while leases
// are watched or pinging.
func (k *keepalives) sweep() {
	now := time.Now()
	var start []*Lease
	k.mu.Lock()
	for ls, t := range k.due {
		if !t.After(now) {
			start = append(start, ls)
			delete(k.due, ls) // watched again when its ping succeeds
		}
	}
	if len(k.due) > 0 || len(start) > 0 {
		k.timer.Reset(k.period)
	} else {
		k.armed = false
	}
	k.mu.Unlock()
	for _, ls := range start {
		go ls.tick()
	}
}
