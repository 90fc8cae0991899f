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
// held the timer fires every sweepPeriod (a quarter of the keepalive
// interval, at most a second) and starts, each on a goroutine of its own,
// the pings that are due; so a lease is pinged between one interval and one
// interval plus a period after its grant or its last ping. With no lease
// held the timer stops.
//
// The same sweep bounds the releases that can be interrupted through their
// socket (Lease.Release on pgx): a releasing lease is linked with the
// deadline of its release, and the sweep sets the socket's deadline of one
// that is overdue.
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
// shard's mutex, as are Lease.watched (whether the lease is linked) and
// Lease.releasing.
type kaLink struct {
	kaPrev, kaNext *Lease
	// kaDue is when the next ping is due (mono), or, while the lease is
	// releasing, when its release is to be interrupted.
	kaDue int64
}

// shardOf returns the list of ls, by its backend.
func (k *keepalives) shardOf(ls *Lease) *kaShard {
	return &k.shards[uint(ls.sess.be.pid)%kaShards]
}

// watch schedules ls's next ping at from (mono) plus one interval; the
// caller holds ls.mu.
func (k *keepalives) watch(ls *Lease, from int64, interval time.Duration) {
	k.link(ls, from+int64(interval), false)
}

// watchRelease has the sweep interrupt ls's release if it has not ended by
// deadline (mono); ls is released, and not watched.
func (k *keepalives) watchRelease(ls *Lease, deadline int64) {
	k.link(ls, deadline, true)
}

// endRelease ends the watch of watchRelease and reports whether the sweep
// interrupted the release (then the socket's deadline is set, or about to
// be).
func (k *keepalives) endRelease(ls *Lease) (interrupted bool) {
	s := k.shardOf(ls)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ls.watched {
		s.unlinkLocked(ls)
		ls.releasing = false
		return false
	}
	return ls.releasing // unlinked by the sweep, which leaves it set
}

// link puts ls in its list (if it is not there) with kaDue due and releasing
// set to rel.
func (k *keepalives) link(ls *Lease, due int64, rel bool) {
	s := k.shardOf(ls)
	s.mu.Lock()
	ls.kaDue, ls.releasing = due, rel
	if !ls.watched {
		ls.kaPrev, ls.kaNext = nil, s.head
		if s.head != nil {
			s.head.kaPrev = ls
		}
		s.head = ls
		s.n++
		ls.watched = true
	}
	s.mu.Unlock()
	if !k.armed.Load() && k.armed.CompareAndSwap(false, true) {
		k.start()
	}
}

// unwatch cancels ls's next ping (a ping already started runs to its end)
// or the watch of its release; the caller holds ls.mu. A no-op if ls is not
// watched.
func (k *keepalives) unwatch(ls *Lease) {
	s := k.shardOf(ls)
	s.mu.Lock()
	if ls.watched {
		s.unlinkLocked(ls)
	}
	ls.releasing = false
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

// sweepPeriod is how often the keepalive sweep runs for a keepalive
// interval: a quarter of it, but at least once a second, which also bounds
// how late an overdue release is interrupted.
func sweepPeriod(keepAlive time.Duration) time.Duration {
	return min(max(keepAlive/4, time.Millisecond), time.Second)
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

// sweep starts the pings that are due, interrupts the releases that are
// overdue, and arms the next sweep while leases are watched.
func (k *keepalives) sweep() {
	k.sweeping.Lock()
	now := mono()
	var start, interrupt []*Lease
	left := 0
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		for ls := s.head; ls != nil; {
			next := ls.kaNext
			if ls.kaDue <= now {
				s.unlinkLocked(ls) // a pinged lease is watched again when its ping succeeds
				if ls.releasing {
					interrupt = append(interrupt, ls)
				} else {
					start = append(start, ls)
				}
			}
			ls = next
		}
		left += s.n
		s.mu.Unlock()
	}
	k.sweeping.Unlock()
	for _, ls := range interrupt {
		// The statement fails at once and the driver closes the
		// connection; Release then discards it and reports the error.
		_ = ls.sess.nc.SetDeadline(time.Now())
	}
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
