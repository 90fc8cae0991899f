package advisory

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// keepalives schedules the keepalive pings of a Locker's sessions on one
// shared timer instead of a timer per session: taking a lock then costs a
// link into a list instead of a timer (whose arming can wake the runtime's
// network poller with a system call on every acquire). While any session is
// watched the timer fires every sweepPeriod (a quarter of the keepalive
// interval, at most a second) and starts, each on a goroutine of its own,
// the pings that are due; so a session is pinged between one interval and
// one interval plus a period after its last answer. With no session watched
// the timer stops.
//
// The same sweep bounds the statements that must answer quickly (a release,
// a multiplexed session's batch): a session sending one is linked with the
// statement's deadline, and the sweep interrupts an overdue one through its
// socket where it can (pgx), and declares a multiplexed session that does
// not answer lost, so that the leases waiting on it hear so in time.
//
// The sessions are linked into lists through their own fields (no map, no
// allocation), spread over shards by backend so that sessions taken and
// given back on several cores at once rarely meet on one mutex.
type keepalives struct {
	shards [kaShards]kaShard
	period time.Duration // how often the timer fires; set before first use

	// armed is whether the timer runs (or is about to). A watch that finds
	// it unset starts the timer; a sweep that finds no session unsets it
	// and looks again, so that a session watched meanwhile is never left
	// without a sweep.
	armed    atomic.Bool
	timerMu  sync.Mutex
	timer    *time.Timer
	sweeping sync.Mutex // one sweep at a time
}

// kaShards is the number of lists of a Locker's keepalives.
const kaShards = 8

// kaShard is one list of watched sessions, padded to its own cache lines.
type kaShard struct {
	mu   sync.Mutex
	head *session // linked through session.kaPrev and session.kaNext
	n    int
	_    [128 - 24]byte // mutex 8, head 8, n 8
}

// kaLink is what links a session into the keepalive lists; every field is
// guarded by the shard's mutex.
type kaLink struct {
	kaPrev, kaNext *session
	watched        bool  // linked
	kaDue          int64 // when the next ping is due (mono); math.MaxInt64: none
	stmtDue        int64 // when the statement in flight is overdue (mono); 0: none
	overdue        bool  // the sweep found the statement overdue
}

// noPing is the kaDue of a session watched only for its statement.
const noPing = math.MaxInt64

// shardOf returns the list of s, by its backend.
func (k *keepalives) shardOf(s *session) *kaShard {
	return &k.shards[uint(s.ci.be.pid)%kaShards]
}

// watch schedules s's next ping at from (mono) plus one interval.
func (k *keepalives) watch(s *session, from int64, interval time.Duration) {
	k.link(s, func() { s.kaDue = from + int64(interval) })
}

// watchStmt has the sweep bound the statement s is about to send: if it has
// not answered by deadline (mono) it is interrupted (endStmt then says so).
func (k *keepalives) watchStmt(s *session, deadline int64) {
	k.link(s, func() {
		if !s.watched {
			s.kaDue = noPing
		}
		s.stmtDue, s.overdue = deadline, false
	})
}

// endStmt ends the bound of watchStmt and reports whether the sweep found
// the statement overdue (then the socket's deadline is set, or about to be,
// and the connection must not go back to the pool). A session linked only
// for the statement is unlinked.
func (k *keepalives) endStmt(s *session) (overdue bool) {
	sh := k.shardOf(s)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	overdue = s.overdue
	s.stmtDue, s.overdue = 0, false
	if s.watched && s.kaDue == noPing {
		sh.unlinkLocked(s)
	}
	return overdue
}

// link runs set under s's shard mutex and puts s in its list if it is not
// there.
func (k *keepalives) link(s *session, set func()) {
	sh := k.shardOf(s)
	sh.mu.Lock()
	set()
	if !s.watched {
		s.kaPrev, s.kaNext = nil, sh.head
		if sh.head != nil {
			sh.head.kaPrev = s
		}
		sh.head = s
		sh.n++
		s.watched = true
	}
	sh.mu.Unlock()
	if !k.armed.Load() && k.armed.CompareAndSwap(false, true) {
		k.start()
	}
}

// unwatch cancels s's next ping (a ping already started runs to its end) and
// any bound of its statement. A no-op if s is not watched.
func (k *keepalives) unwatch(s *session) {
	sh := k.shardOf(s)
	sh.mu.Lock()
	if s.watched {
		sh.unlinkLocked(s)
	}
	s.stmtDue, s.overdue = 0, false
	sh.mu.Unlock()
}

// unlinkLocked takes s out of sh; sh.mu is held and s is in sh.
func (sh *kaShard) unlinkLocked(s *session) {
	if s.kaPrev != nil {
		s.kaPrev.kaNext = s.kaNext
	} else {
		sh.head = s.kaNext
	}
	if s.kaNext != nil {
		s.kaNext.kaPrev = s.kaPrev
	}
	s.kaPrev, s.kaNext = nil, nil
	s.watched = false
	sh.n--
}

// sweepPeriod is how often the keepalive sweep runs for a keepalive
// interval: a quarter of it, but at least once a second, which also bounds
// how late an overdue statement is interrupted.
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

// sweep starts the pings that are due, interrupts the statements that are
// overdue, and arms the next sweep while sessions are watched.
func (k *keepalives) sweep() {
	k.sweeping.Lock()
	now := mono()
	var start, overdue []*session
	left := 0
	for i := range k.shards {
		sh := &k.shards[i]
		sh.mu.Lock()
		for s := sh.head; s != nil; {
			next := s.kaNext
			switch {
			case s.stmtDue != 0:
				if s.stmtDue <= now && !s.overdue {
					s.overdue = true
					overdue = append(overdue, s)
				}
			case s.kaDue <= now:
				sh.unlinkLocked(s) // watched again when its ping answers
				start = append(start, s)
			}
			s = next
		}
		left += sh.n
		sh.mu.Unlock()
	}
	k.sweeping.Unlock()
	for _, s := range overdue {
		s.interrupt()
	}
	if left > 0 || len(start) > 0 {
		k.start()
	} else {
		k.armed.Store(false)
		// A session watched since the count above found the timer still
		// armed and left it: look again.
		if k.watchedAny() && k.armed.CompareAndSwap(false, true) {
			k.start()
		}
	}
	for _, s := range start {
		go s.tick()
	}
}

// watchedAny reports whether any session is watched.
func (k *keepalives) watchedAny() bool {
	for i := range k.shards {
		sh := &k.shards[i]
		sh.mu.Lock()
		n := sh.n
		sh.mu.Unlock()
		if n > 0 {
			return true
		}
	}
	return false
}

// interrupt acts on a statement the sweep found overdue: the socket's
// deadline makes pgx fail it at once and close the connection; a
// multiplexed session that does not answer is lost, so that the leases on it
// and the operations waiting for it hear so now, even where the driver call
// cannot be interrupted (lib/pq) and stays stuck until TCP gives up.
func (s *session) interrupt() {
	if s.ci.nc != nil {
		_ = s.ci.nc.SetDeadline(time.Now())
	}
	if s.mux {
		s.lose(fmt.Errorf("no answer within %v: %w", s.l.pingTimeout, context.DeadlineExceeded))
	}
}

// monoEpoch is the origin of mono.
var monoEpoch = time.Now()

// mono returns the time on the monotonic clock, in nanoseconds since
// monoEpoch: cheaper to read and smaller to keep than a time.Time, for the
// times a lease keeps (grant, next ping) and the durations made of them.
func mono() int64 { return int64(time.Since(monoEpoch)) }
