package advisory

import (
	"context"
	"log/slog"
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// DefaultKeepAlive is the keepalive interval when WithKeepAlive is not given.
const DefaultKeepAlive = time.Second

// releaseTimeout bounds a release, which runs even when the caller's context
// is already cancelled.
const releaseTimeout = 5 * time.Second

// Option configures a Locker.
type Option func(*options)

type options struct {
	keepAlive   time.Duration
	lockTimeout time.Duration
	logger      *slog.Logger
	hooks       Hooks

	handoffs      int           // consecutive handoffs allowed; 0: none
	handoffWindow time.Duration // how long after the server grant a handoff is allowed

	fencing    bool
	fenceTable string // quoted identifier
	fenceErr   error  // a bad table name, reported by every acquire

	deadPeer    time.Duration // WithDeadPeerTimeout, if deadPeerSet
	deadPeerSet bool

	dedicated bool // WithDedicatedSessions
	sessions  int  // WithSessions; 0: the default
	waiting   int  // WithWaiting; 0: the default
}

// WithSessions makes the Locker keep its single-key leases on at most n
// multiplexed sessions: n connections of the pool, each carrying any number
// of leases, whose tries and releases go to the server in batches (one
// round trip for the operations of many goroutines). This is the default,
// with n = DefaultSessions over a pool without a limit and a quarter of
// SetMaxOpenConns (1 to DefaultSessions) over a bounded one, for drivers
// whose connections keep one server session (lib/pq, pgx); with any other
// driver leases are dedicated unless WithSessions asks otherwise. It panics
// if n < 1.
//
// A Lock that finds its key held by another process waits on the server on
// a dedicated session of its own (so that no shared session is blocked),
// which then carries that lease; LockAll always takes one. WithWaiting
// bounds those.
func WithSessions(n int) Option {
	if n < 1 {
		panic("advisory: WithSessions needs at least 1 session")
	}
	return func(o *options) { o.sessions = n }
}

// WithWaiting bounds the dedicated sessions of a multiplexed Locker: at most
// n connections of the pool wait on the server for keys held by other
// processes, or carry the leases they got that way, or those of LockAll.
// More such acquires wait in memory for one (bounded by their context).
// Goroutines of the process that want one key queue in memory before that
// (see the package documentation), so at most one connection waits per key
// in exclusive mode. The default is DefaultWaiting over a pool without a
// limit and a quarter of SetMaxOpenConns (1 to DefaultWaiting) over a
// bounded one. It panics if n < 1.
func WithWaiting(n int) Option {
	if n < 1 {
		panic("advisory: WithWaiting needs at least 1 connection")
	}
	return func(o *options) { o.waiting = n }
}

// WithDedicatedSessions gives every lease a session of its own: a
// connection of the pool from the acquire to the release. A process then
// holds at most as many locks as its pool has connections, and a handler
// that holds a lock and needs a connection of the same pool competes with
// the lock holders for it; but a lease's Tx never waits for another lease's
// statements, and its backend (PID) is its own.
func WithDedicatedSessions() Option {
	return func(o *options) { o.dedicated = true }
}

// WithKeepAlive sets how often a held lease checks its connection (default
// DefaultKeepAlive). A loss is signalled within about d plus one second. Values
// below 10 ms are raised to 10 ms.
func WithKeepAlive(d time.Duration) Option {
	return func(o *options) {
		if d < 10*time.Millisecond {
			d = 10 * time.Millisecond
		}
		o.keepAlive = d
	}
}

// DefaultHandoffs and DefaultHandoffWindow are the handoff budget when
// WithHandoff is not given.
const (
	DefaultHandoffs      = 8
	DefaultHandoffWindow = 20 * time.Millisecond
)

// WithHandoff bounds how a held exclusive lock is handed on inside the
// process. Goroutines of one process that Lock the same key queue in memory
// (only the first goes to the server and pins a connection); when the holder
// releases and the next in that queue wants the key exclusively, Release
// passes the held server lock with its connection straight to it, saving the
// unlock and lock round trips. Other processes waiting on the server for the
// key get no turn during such a run, so a run ends with a real unlock after n
// consecutive handoffs or once window has passed since the server granted the
// lock, whichever comes first. n <= 0 turns handoffs off (every Release
// unlocks on the server). Fencing (WithFencing) never hands off: each
// acquisition must take its own token.
func WithHandoff(n int, window time.Duration) Option {
	return func(o *options) {
		o.handoffs = max(n, 0)
		o.handoffWindow = max(window, 0)
	}
}

// WithLockTimeout bounds every wait of Lock, LockShared, LockAll and Do on
// the server (lock_timeout, for that statement only) and in the process's own
// queue for the key (together at most d); a wait that runs out
// returns an error that wraps ErrLockTimeout. Zero, the default, leaves waits
// bounded by the context only. The server counts in milliseconds; a positive
// d below 1 ms counts as 1 ms. A wait that runs out on the server costs its
// connection, which is closed instead of going back to the pool: the server
// can grant the lock as lock_timeout fires and still report the timeout,
// and the lock outlives the failed statement.
func WithLockTimeout(d time.Duration) Option {
	return func(o *options) {
		if d < 0 {
			d = 0
		}
		o.lockTimeout = d
	}
}

// WithLogger makes the Locker log acquisitions and releases at Debug level,
// losses at Warn and failed cleanups at Error. A nil logger, the default,
// logs nothing and costs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithHooks installs metrics hooks. Each nil field costs nothing.
func WithHooks(h Hooks) Option {
	return func(o *options) { o.hooks = h }
}

// Hooks are optional callbacks for metrics. They run synchronously on the
// goroutine that caused the event (Lost on the keepalive timer's) and must
// not block. For a lease of several keys, key is the first key in sorted
// order.
type Hooks struct {
	// Acquired runs when a lease is granted; waited is the time from the
	// call to the grant, connection checkout included.
	Acquired func(key keyspace.Key, shared bool, waited time.Duration)
	// Contended runs when a try is refused, or when a Lock or LockAll found
	// the key held and had to wait, in the process's queue or on the server
	// (setting this hook makes them try first: see the package
	// documentation).
	Contended func(key keyspace.Key, shared bool)
	// Released runs when a held lease is released; held is the time since
	// the grant.
	Released func(key keyspace.Key, shared bool, held time.Duration)
	// Lost runs when a held lease is lost, with the error Lease.Err returns.
	Lost func(key keyspace.Key, err error)
	// Acquire runs once per call of Lock, TryLock, LockShared,
	// TryLockShared and LockAll (and the acquire of Do) as it returns,
	// whatever the outcome, with the caller's context (for a span) and
	// what the call did (see AcquireEvent). Unlike Contended it does not
	// change what is sent. It costs two clock reads per call when set.
	Acquire func(ctx context.Context, e AcquireEvent)
	// Queued runs when a Lock or LockShared starts to wait in the process's
	// queue behind other leases of this Locker for key; ahead is how many
	// goroutines of the process wait before it. Locker.Waiting lists who
	// waits there.
	Queued func(key keyspace.Key, shared bool, ahead int)
}
