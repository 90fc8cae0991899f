package advisory

import (
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/keyqueue"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// closedChan is the Lost channel of a lease that was lost before anyone
// asked for it.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Lease is one held lock (or, from LockAll, one set of locks) on a server
// session: a connection of its own (dedicated), or one that it shares with
// other leases of its Locker (multiplexed). Every method is safe for
// concurrent use, and Release is nil-safe. A Lease must be released even
// after it was lost, to let the next goroutine of the process have the key.
type Lease struct {
	l      *Locker
	s      *session
	keys   []keyspace.Key
	grant  int64   // when this lease got the lock (mono)
	tokens []int64 // fencing tokens, in the order of keys; nil without fencing

	// ticket is the lease's place in the Locker's in-process queue (nil for
	// LockAll leases, which bypass it). It is given back after the server
	// lock, or handed on with it.
	ticket *keyqueue.Ticket[keyspace.Key]
	// serverGrant is when the server granted the lock that this lease
	// holds, and passes how many times it was handed on since (Handoff).
	serverGrant int64 // mono
	passes      int

	relMu sync.Mutex // serialises Release calls

	mu       sync.Mutex
	err      error         // nil while held, then the loss error or ErrReleased
	lost     chan struct{} // made on demand by Lost; closed on loss
	onLost   []*lossFunc
	released bool // Release has started: Tx refuses to begin
	isLost   bool

	// sPrev and sNext link the live leases of the session; guarded by the
	// session's mutex.
	sPrev, sNext *Lease

	shared bool // set at the grant, never changed: read without mu
}

// lossFunc is one AfterLost registration.
type lossFunc struct{ f func(error) }

// newLease returns a lease of keys held on s.
func newLease(l *Locker, s *session, keys []keyspace.Key, shared bool, tokens []int64) *Lease {
	now := mono()
	return &Lease{l: l, s: s, keys: keys, shared: shared, grant: now, serverGrant: now, tokens: tokens}
}

// Key returns the lease's key; for a LockAll lease, the first in sorted order.
func (ls *Lease) Key() keyspace.Key { return ls.keys[0] }

// Keys returns every key of the lease in sorted order (a copy).
func (ls *Lease) Keys() []keyspace.Key { return slices.Clone(ls.keys) }

// Shared reports whether the lease holds its key in shared mode.
func (ls *Lease) Shared() bool { return ls.shared }

// PID returns the server backend pid that holds the lock, as pg_locks and
// pg_stat_activity show it. The leases of one multiplexed session share it.
func (ls *Lease) PID() int { return ls.s.pid() }

// Lost returns a channel that is closed when the lock is lost (not when it
// is released). The channel is made on the first call; AfterLost watches a
// lease without one.
func (ls *Lease) Lost() <-chan struct{} {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.lost == nil {
		if ls.isLost {
			ls.lost = closedChan
		} else {
			ls.lost = make(chan struct{})
		}
	}
	return ls.lost
}

// Err returns nil while the lock is held; after a loss, an error wrapping
// ErrLockLost and the cause (ErrPooler, the driver's error, or
// context.DeadlineExceeded for an unanswered keepalive), also after Release;
// after the Release of a lease that was not lost, ErrReleased.
func (ls *Lease) Err() error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.err
}

// lossErr returns the loss error if the lease was lost, else nil.
func (ls *Lease) lossErr() error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.isLost {
		return ls.err
	}
	return nil
}

// AfterLost arranges for f to run on its own goroutine once the lease is
// lost, with the loss error (the one Err returns), like context.AfterFunc:
// watching a lease this way costs no goroutine until the loss. If the lease
// is already lost, f starts at once. It never runs for a lease released
// without a loss.
//
// stop unregisters f; it returns true if that stopped f from being run, false
// if f was already started (or stop was already called).
func (ls *Lease) AfterLost(f func(err error)) (stop func() bool) {
	lf := &lossFunc{f: f}
	ls.mu.Lock()
	if ls.isLost {
		err := ls.err
		ls.mu.Unlock()
		go f(err)
		return func() bool { return false }
	}
	ls.onLost = append(ls.onLost, lf)
	ls.mu.Unlock()
	return func() bool {
		ls.mu.Lock()
		defer ls.mu.Unlock()
		if i := slices.Index(ls.onLost, lf); i >= 0 {
			ls.onLost = slices.Delete(ls.onLost, i, i+1)
			return true
		}
		return false
	}
}

// held returns how long the lease has held its lock.
func (ls *Lease) held() time.Duration { return time.Duration(mono() - ls.grant) }

// markLost records that the lease's session ended with cause while the
// lease held its lock, and signals it: Lost, AfterLost, the hook, the log.
// A lease released already is left as it is.
func (ls *Lease) markLost(cause error) {
	ls.mu.Lock()
	if ls.err != nil {
		ls.mu.Unlock()
		return
	}
	err := errorf("advisory: lock %v: %w: %w", keyArg(ls.keys), ErrLockLost, cause)
	ls.err = err
	ls.isLost = true
	ls.l.obs.held.Add(-1)
	if ls.lost != nil {
		close(ls.lost)
	} else {
		ls.lost = closedChan
	}
	fns := ls.onLost
	ls.onLost = nil
	ls.mu.Unlock()

	for _, lf := range fns {
		go lf.f(err)
	}
	if h := ls.l.opts.hooks.Lost; h != nil {
		h(ls.keys[0], err)
	}
	ls.l.log(slog.LevelWarn, "advisory: lock lost", ls.keys, slog.Int("pid", ls.s.pid()), slog.Any("error", err))
}

// markReleased records a release that found the lock held.
func (ls *Lease) markReleased() {
	ls.mu.Lock()
	if ls.err == nil {
		ls.l.obs.held.Add(-1)
	}
	ls.err = ErrReleased
	ls.onLost = nil
	ls.mu.Unlock()
}

// releaseTicket gives the lease's place in the in-process queue back.
func (ls *Lease) releaseTicket() {
	if ls.ticket != nil {
		ls.ticket.Release()
		ls.ticket = nil
	}
}
