package advisory

import (
	"context"
	"database/sql"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/keyqueue"
	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// MaxSemaphoreSlots bounds the n of NewSemaphore.
const MaxSemaphoreSlots = 1 << 16

// DefaultSemaphorePoll is how often, at most, a process that waits for a
// semaphore held elsewhere looks at all its slots again (SemaphorePoll).
const DefaultSemaphorePoll = 250 * time.Millisecond

// ErrBadSemaphore is returned by NewSemaphore for a nil Locker, an empty
// name, or n outside 1 to MaxSemaphoreSlots.
var ErrBadSemaphore = errors.New("advisory: bad semaphore")

// SemaphoreSlots returns the n slot keys of the semaphore name in ns, the
// keys that NewSemaphore takes: slot i is ns.ID(ns.Hash(name)'s second
// number + i), wrapping around at the ends of int32. pg_locks shows them as
// classid = the namespace id, objid = that number, objsubid = 2.
func SemaphoreSlots(ns keyspace.Namespace, name string, n int) []keyspace.Key {
	_, base, _ := ns.Hash(name).Pair()
	out := make([]keyspace.Key, n)
	for i := range out {
		out[i] = ns.ID(base + int32(uint32(i))) // wraps, as documented
	}
	return out
}

// SemaphoreOption configures a Semaphore.
type SemaphoreOption func(*Semaphore)

// SemaphorePoll sets how often, at most, a waiting process looks at all
// the slots again (default DefaultSemaphorePoll; values below 10 ms are
// raised to 10 ms). See Semaphore for what waiting costs.
func SemaphorePoll(d time.Duration) SemaphoreOption {
	return func(s *Semaphore) { s.poll = max(d, 10*time.Millisecond) }
}

// Semaphore lets at most n holders, across every process, hold the
// semaphore of one name: it is n advisory locks (slots, SemaphoreSlots) in
// a namespace, and a holder holds one of them. It is safe for concurrent
// use. Make one per name and Locker and keep it: the goroutines of the
// process that wait for it queue in its memory.
//
// Waiting never spins. The goroutines of the process that wait queue in
// memory, first come first served; only the first of them asks the server:
// it tries every slot (one round trip per slot not held by the process),
// then waits on the server for one slot with lock_timeout set to the poll
// interval (SemaphorePoll, with a jitter of ±25%), on one waiting connection
// of the Locker (WithWaiting; a wait that the poll interval ends closes its
// connection, see WithLockTimeout), then tries again. So a process waiting for a
// semaphore held elsewhere uses at most one connection for it, and each
// round costs at most n+2 round trips and ends with a slot, after the poll
// interval, or when a holder of the process releases: at most n+2 round
// trips per slot taken, per poll interval, or per release in the process
// (while every slot is held by the process, none). A slot freed by another process is found within the
// poll interval (at once if it is the one waited on). Stats counts it. When
// every slot is held by the process itself, the waiters wait in memory only.
// A holder of the process that releases gives the slot back to the server
// and wakes the first waiter, which tries again at once unless it is
// waiting on the server (then it finds the slot within the poll interval):
// a released slot is open to every process alike.
type Semaphore struct {
	l     *Locker
	name  string
	slots []keyspace.Key
	poll  time.Duration

	stats semStats

	mu      sync.Mutex
	waiters []*semWaiter  // FIFO; the first asks the server
	onSrv   *semWaiter    // the first waiter while it waits on the server
	freed   chan struct{} // closed (and replaced) when a holder of the process releases
}

type semWaiter struct {
	turn chan struct{} // the waiter's turn to ask the server; buffered
}

// NewSemaphore returns the semaphore name of at most n holders, whose slots
// are SemaphoreSlots(ns, name, n), taken through l. Every process must use
// the same ns, name and n for the same semaphore. It returns an error
// wrapping ErrBadSemaphore for a nil l, an empty name or n out of range.
func NewSemaphore(l *Locker, ns keyspace.Namespace, name string, n int, opts ...SemaphoreOption) (*Semaphore, error) {
	switch {
	case l == nil:
		return nil, errorf("advisory: %w: nil *Locker", ErrBadSemaphore)
	case name == "":
		return nil, errorf("advisory: %w: empty name", ErrBadSemaphore)
	case n < 1 || n > MaxSemaphoreSlots:
		return nil, errorf("advisory: %w %q: %d slots, want 1 to %d", ErrBadSemaphore, name, n, MaxSemaphoreSlots)
	}
	s := &Semaphore{l: l, name: name, slots: SemaphoreSlots(ns, name, n), poll: DefaultSemaphorePoll,
		freed: make(chan struct{})}
	for _, o := range opts {
		if o != nil {
			o(s)
		}
	}
	return s, nil
}

// Name returns the semaphore's name.
func (s *Semaphore) Name() string { return s.name }

// Size returns n, the most holders the semaphore has at once.
func (s *Semaphore) Size() int { return len(s.slots) }

// TryAcquire takes a slot if one is free, without waiting: it tries each
// slot once, and returns an error wrapping ErrNotAcquired if all were held
// (or if goroutines of this process already wait for the semaphore: they
// come first).
func (s *Semaphore) TryAcquire(ctx context.Context) (*SemaphoreLease, error) {
	s.mu.Lock()
	queued := len(s.waiters) > 0
	s.mu.Unlock()
	if queued {
		return nil, errorf("advisory: semaphore %q: other goroutines of this process wait for it: %w", s.name, ErrNotAcquired)
	}
	return s.tryAll(ctx)
}

// Acquire takes a slot, waiting until one is free or ctx ends (see
// Semaphore for how it waits). If ctx ends first it returns an error
// wrapping ctx's error and holds nothing. The caller must Release the
// lease.
func (s *Semaphore) Acquire(ctx context.Context) (*SemaphoreLease, error) {
	if sl, err := s.TryAcquire(ctx); err == nil || !errors.Is(err, ErrNotAcquired) {
		return sl, err
	}
	w := &semWaiter{turn: make(chan struct{}, 1)}
	s.mu.Lock()
	s.waiters = append(s.waiters, w)
	s.nudgeLocked()
	s.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			s.leave(w)
			return nil, errorf("advisory: semaphore %q: %w", s.name, context.Cause(ctx))
		case <-w.turn:
			sl, err := s.ask(ctx, w)
			if sl != nil || err != nil {
				s.leave(w)
				return sl, err
			}
			s.mu.Lock()
			s.nudgeLocked()
			s.mu.Unlock()
		}
	}
}

// nudgeLocked gives the first waiter its turn to ask the server.
func (s *Semaphore) nudgeLocked() {
	if len(s.waiters) > 0 {
		select {
		case s.waiters[0].turn <- struct{}{}:
		default:
		}
	}
}

// leave takes w out of the queue and gives the next waiter its turn.
func (s *Semaphore) leave(w *semWaiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.waiters, w); i >= 0 {
		s.waiters = slices.Delete(s.waiters, i, i+1)
		if i == 0 {
			s.nudgeLocked()
		}
	}
}

// ask is the first waiter's turn: try every slot, then wait on the server
// for one for at most the poll interval. It returns a lease, or an error,
// or neither when the turn should be taken again.
func (s *Semaphore) ask(ctx context.Context, w *semWaiter) (*SemaphoreLease, error) {
	sl, err := s.tryAll(ctx)
	if err == nil || !errors.Is(err, ErrNotAcquired) {
		return sl, err
	}
	poll := time.Duration(float64(s.poll) * (0.75 + rand.Float64()/2))
	// Wait on a slot that no lease of the process holds.
	start := rand.IntN(len(s.slots))
	for i := range s.slots {
		j := (start + i) % len(s.slots)
		t, ok := s.l.q.TryLock(s.slots[j])
		if !ok {
			continue
		}
		sw := &serverWait{res: make(chan serverResult, 1)}
		s.mu.Lock()
		s.onSrv = w
		s.mu.Unlock()
		go s.waitSlot(sw, j, t, poll)
		select {
		case r := <-sw.res:
			s.mu.Lock()
			s.onSrv = nil
			s.mu.Unlock()
			return r.sl, r.err
		case <-ctx.Done():
			// The wait goes on without its caller (a cancelled wait would
			// cost its connection), for at most the poll interval, and
			// passes on what it gets.
			s.mu.Lock()
			sw.abandoned = true
			if s.onSrv == w {
				s.onSrv = nil
			}
			var late serverResult
			select {
			case late = <-sw.res: // answered as ctx ended
			default:
			}
			s.mu.Unlock()
			if late.sl != nil {
				_ = late.sl.Release(context.Background()) // passed on
			}
			return nil, errorf("advisory: semaphore %q: %w", s.name, context.Cause(ctx))
		}
	}
	// Every slot is held by this process: wait for one of them to be
	// released (or the poll interval, for slots lost meanwhile).
	s.mu.Lock()
	freed := s.freed
	s.mu.Unlock()
	timer := time.NewTimer(poll)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	case <-freed:
	}
	return nil, nil
}

// serverWait is one wait on the server for a slot; abandoned (guarded by
// the Semaphore's mu) says that its caller went away.
type serverWait struct {
	res       chan serverResult
	abandoned bool
}

type serverResult struct {
	sl  *SemaphoreLease
	err error
}

// waitSlot waits on the server for slot j, whose place in the Locker's
// queue t is, for at most poll (lock_timeout), and answers on sw.res: a
// lease, an error, or neither when the poll interval passed. A wait whose
// caller went away releases what it got (which wakes the first waiter).
func (s *Semaphore) waitSlot(sw *serverWait, j int, t *keyqueue.Ticket[keyspace.Key], poll time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), poll+s.l.opts.keepAlive+30*time.Second)
	defer cancel()
	s.stats.waits.Add(1)
	var r serverResult
	ls, err := s.l.dedicated(ctx, s.slots[j:j+1], false, false, true, poll)
	switch {
	case err == nil:
		ls.ticket = t
		r.sl = s.newLease(ls, j)
	case pgerr.SQLState(err) == pgerr.LockNotAvailable:
		t.Release()
		s.stats.timeouts.Add(1)
	default:
		t.Release()
		r.err = errorf("advisory: semaphore %q: %w", s.name, s.l.fail(ctx, s.slots[j:j+1], err))
	}
	s.mu.Lock()
	gone := sw.abandoned
	if !gone {
		sw.res <- r // buffered
	}
	s.mu.Unlock()
	if !gone {
		return
	}
	if r.sl != nil {
		_ = r.sl.Release(context.Background()) // nudges the first waiter
	}
}

// tryTimeout bounds a round of tries, which runs to its end whatever the
// caller's context does (see tryAll).
const tryTimeout = 10 * time.Second

// tryAll tries the slots in order, once each. The round is not cut short
// by the end of ctx, only checked against it before each try: a try cut
// short on the wire costs its connection (advisory discards a session whose
// state is in doubt), and a round is at most n quick round trips.
func (s *Semaphore) tryAll(caller context.Context) (*SemaphoreLease, error) {
	if err := caller.Err(); err != nil {
		return nil, errorf("advisory: semaphore %q: %w", s.name, context.Cause(caller))
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(caller), tryTimeout)
	defer cancel()
	for i, k := range s.slots {
		if caller.Err() != nil {
			return nil, errorf("advisory: semaphore %q: %w", s.name, context.Cause(caller))
		}
		if s.l.q.Holders(k) > 0 {
			continue // held by this process: no round trip
		}
		s.stats.tries.Add(1)
		ls, err := s.l.TryLock(ctx, k)
		if err == nil {
			return s.newLease(ls, i), nil
		}
		if !errors.Is(err, ErrNotAcquired) {
			return nil, errorf("advisory: semaphore %q: %w", s.name, err)
		}
		s.stats.refused.Add(1)
	}
	return nil, errorf("advisory: semaphore %q: all %d slots held: %w", s.name, len(s.slots), ErrNotAcquired)
}

type semStats struct{ tries, refused, waits, timeouts atomic.Int64 }

// SemaphoreStats counts what a Semaphore sent to the server, for metrics
// and for sizing SemaphorePoll. Every count is since NewSemaphore.
type SemaphoreStats struct {
	// Tries is the try statements sent (one round trip each, or a share of
	// one in a multiplexed session's batch); a try of a slot that the
	// process holds is refused in memory and not counted.
	Tries int64
	// Refused is how many of those found the slot held elsewhere.
	Refused int64
	// Waits is the waits on the server for one slot (a try and a wait on
	// the waiting connection: two round trips), and WaitTimeouts how many
	// of them the poll interval ended.
	Waits, WaitTimeouts int64
}

// Stats returns the semaphore's counts so far.
func (s *Semaphore) Stats() SemaphoreStats {
	return SemaphoreStats{Tries: s.stats.tries.Load(), Refused: s.stats.refused.Load(), Waits: s.stats.waits.Load(),
		WaitTimeouts: s.stats.timeouts.Load()}
}

// SemaphoreLease is one held slot of a Semaphore: a Lease of the slot's
// key, with everything a Lease has. Its methods are safe for concurrent
// use; Release is nil-safe.
type SemaphoreLease struct {
	s    *Semaphore
	ls   *Lease
	slot int
	stop func() bool

	mu       sync.Mutex
	released bool
	lost     chan struct{}
	lostErr  error
}

func (s *Semaphore) newLease(ls *Lease, slot int) *SemaphoreLease {
	sl := &SemaphoreLease{s: s, ls: ls, slot: slot, lost: make(chan struct{})}
	sl.stop = ls.AfterLost(func(err error) {
		sl.mu.Lock()
		defer sl.mu.Unlock()
		if !sl.released && sl.lostErr == nil {
			sl.lostErr = err
			close(sl.lost)
		}
	})
	return sl
}

// Slot returns which slot the lease holds, 0 to n-1.
func (sl *SemaphoreLease) Slot() int { return sl.slot }

// Key returns the key of the slot.
func (sl *SemaphoreLease) Key() keyspace.Key { return sl.ls.Key() }

// PID returns the backend pid that holds the slot.
func (sl *SemaphoreLease) PID() int { return sl.ls.PID() }

// Token returns the slot's fencing token (Lease.Token).
func (sl *SemaphoreLease) Token() int64 { return sl.ls.Token() }

// Lost returns a channel that is closed if the slot is lost while this
// lease holds it (not when it is released).
func (sl *SemaphoreLease) Lost() <-chan struct{} { return sl.lost }

// Err returns nil while the slot is held; an error wrapping ErrLockLost
// after a loss; ErrReleased after Release of a slot that was not lost.
func (sl *SemaphoreLease) Err() error {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	switch {
	case sl.lostErr != nil:
		return sl.lostErr
	case sl.released:
		return ErrReleased
	}
	return sl.ls.Err()
}

// AfterLost is Lease.AfterLost for the slot while this lease holds it.
func (sl *SemaphoreLease) AfterLost(f func(err error)) (stop func() bool) {
	var mu sync.Mutex
	done := false
	inner := sl.ls.AfterLost(func(err error) {
		sl.mu.Lock()
		mine := !sl.released
		sl.mu.Unlock()
		mu.Lock()
		run := mine && !done
		done = true
		mu.Unlock()
		if run {
			f(err)
		}
	})
	return func() bool {
		mu.Lock()
		was := done
		done = true
		mu.Unlock()
		return inner() && !was
	}
}

// Tx is Lease.Tx on the connection that holds the slot.
func (sl *SemaphoreLease) Tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if sl == nil {
		return errorf("advisory: Tx on a nil semaphore lease: %w", ErrReleased)
	}
	sl.mu.Lock()
	released := sl.released
	sl.mu.Unlock()
	if released {
		return errorf("advisory: semaphore %q slot %d: %w", sl.s.name, sl.slot, ErrReleased)
	}
	return sl.ls.Tx(ctx, fn)
}

// Release gives the slot back: to the first goroutine of the process that
// waits for the semaphore (see Semaphore), else to the server, with
// Lease.Release's guarantees. A second Release returns an error wrapping
// ErrReleased; Release of a nil lease returns nil.
func (sl *SemaphoreLease) Release(ctx context.Context) error {
	if sl == nil {
		return nil
	}
	sl.mu.Lock()
	if sl.released {
		sl.mu.Unlock()
		return errorf("advisory: semaphore %q slot %d: %w", sl.s.name, sl.slot, ErrReleased)
	}
	sl.released = true
	sl.mu.Unlock()
	sl.stop()
	err := sl.ls.Release(ctx)
	s := sl.s
	s.mu.Lock()
	close(s.freed)
	s.freed = make(chan struct{})
	s.nudgeLocked() // the first waiter may take the slot now
	s.mu.Unlock()
	if err != nil {
		return errorf("advisory: semaphore %q slot %d: %w", sl.s.name, sl.slot, err)
	}
	return nil
}

// String names the lease for logs: the semaphore, the slot, the key.
func (sl *SemaphoreLease) String() string {
	return "semaphore " + strconv.Quote(sl.s.name) + " slot " + strconv.Itoa(sl.slot) + " (" + sl.Key().String() + ")"
}
