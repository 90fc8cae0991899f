package advisory

import (
	"sync"
	"sync/atomic"
	"time"
)

// keepalives schedules the keepalive pings of a Locker's leases on one
// shared timer instead of a timer per lease: taking a lock then costs a link
// into a list instead of a timer (whose arming can wake the runtime's
// network poller with a system call on every acquire). While any lease is
// held the timer fires every quarter of the keepalive interval and starts,
// each on a goroutine of its own, the pings that are due; so a lease is
// pinged between one and one and a quarter intervals after its grant or its
// last ping. With no lease held the timer stops.
//
// The leases are linked into lists through their own fields (no map, no
// allocation), spread over shards by backend so that leases taken and given
// back on several cores at once rarely meet on one mutex.
type keepalives struct {
	shards [kaShards]kaShard
	period time.Duration // how often the timer fires; set before first use

	// armed is whether the timer runs (or is about to). A watch that finds
	// it unset starts the timer; a sweep that finds no lease unsets it and
	// looks again, so that a lease watched meanwhile is never left without
	// a sweep.
	armed    atomic.Bool
	timerMu  sync.Mutex
	timer    *time.Timer
	sweeping sync.Mutex // one sweep at a time
}

// kaShards is the number of lists of a Locker's keepalives.
const kaShards = 8

// kaShard is one list of watched leases, padded to its own cache lines.
type kaShard struct {
	mu   sync.Mutex
	head *Lease // linked through Lease.kaPrev and Lease.kaNext
	n    int
	_    [128 - 24]byte // mutex 8, head 8, n 8
}

// kaLink is what links a lease into the keepalive lists; guarded by the
// shard's mutex, as is Lease.watched (whether the lease is linked).
type kaLink struct {
	kaPrev, kaNext *Lease
	kaDue          int64 // when the next ping is due (mono)
}

// shardOf returns the list of ls, by its backend.
func (k *keepalives) shardOf(ls *Lease) *kaShard {
	return &k.shards[uint(ls.be.pid)%kaShards]
}

// watch schedules ls's next ping at from (mono) plus one interval; the
// caller holds ls.mu, and ls is not watched.
func (k *keepalives) watch(ls *Lease, from int64, interval time.Duration) {
	ls.kaDue = from + int64(interval)
	s := k.shardOf(ls)
	s.mu.Lock()
	ls.kaPrev, ls.kaNext = nil, s.head
	if s.head != nil {
		s.head.kaPrev = ls
	}
	s.head = ls
	s.n++
	ls.watched = true
	s.mu.Unlock()
	if !k.armed.Load() && k.armed.CompareAndSwap(false, true) {
		k.start()
	}
}

// unwatch cancels ls's next ping (a ping already started runs to its end);
// the caller holds ls.mu. A no-op if ls is not watched.
func (k *keepalives) unwatch(ls *Lease) {
	s := k.shardOf(ls)
	s.mu.Lock()
	if ls.watched {
		s.unlinkLocked(ls)
	}
	s.mu.Unlock()
}

// unlinkLocked takes ls out of s; s.mu is held and ls is in s.
func (s *kaShard) unlinkLocked(ls *Lease) {
	if ls.kaPrev != nil {
		ls.kaPrev.kaNext = ls.kaNext
	} else {
		s.head = ls.kaNext
	}
	if ls.kaNext != nil {
		ls.kaNext.kaPrev = ls.kaPrev
	}
	ls.kaPrev, ls.kaNext = nil, nil
	ls.watched = false
	s.n--
}

// start arms the timer for one period from now.
func (k *keepalives) start() {
	k.timerMu.Lock()
	defer k.timerMu.Unlock()
	if k.timer == nil {
		k.timer = time.AfterFunc(k.period, k.sweep)
	} else {
		k.timer.Reset(k.period)
	}
}

// sweep starts the pings that are due and arms the next sweep while leases
// are watched.
func (k *keepalives) sweep() {
	k.sweeping.Lock()
	now := mono()
	var start []*Lease
	left := 0
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		for ls := s.head; ls != nil; {
			next := ls.kaNext
			if ls.kaDue <= now {
				s.unlinkLocked(ls) // watched again when its ping succeeds
				start = append(start, ls)
			}
			ls = next
		}
		left += s.n
		s.mu.Unlock()
	}
	k.sweeping.Unlock()
	if left > 0 || len(start) > 0 {
		k.start()
	} else {
		k.armed.Store(false)
		// A lease watched since the count above found the timer still
		// armed and left it: look again.
		if k.watchedAny() && k.armed.CompareAndSwap(false, true) {
			k.start()
		}
	}
	for _, ls := range start {
		go ls.tick()
	}
}

// watchedAny reports whether any lease is watched.
func (k *keepalives) watchedAny() bool {
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		n := s.n
		s.mu.Unlock()
		if n > 0 {
			return true
		}
	}
	return false
}

// monoEpoch is the origin of mono.
var monoEpoch = time.Now()

// mono returns the time on the monotonic clock, in nanoseconds since
// monoEpoch: cheaper to read and smaller to keep than a time.Time, for the
// times a lease keeps (grant, next ping) and the durations made of them.
func mono() int64 { return int64(time.Since(monoEpoch)) }
