package middleware

import (
	"database/sql"
	"log/slog"
	"net/http"
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// DefaultMaxWaiters is MaxWaiters when it is not given: at most 256
// requests of one middleware wait for the same key at once. A request that
// waits behind another of the same Locker costs a goroutine and no
// connection, and WaitUpTo bounds how long it waits, so the cap is there to
// turn away a pile-up, not to protect the pool: 256 requests holding a key
// for a millisecond each are served within a WaitUpTo of 2 s.
const DefaultMaxWaiters = 256

// DefaultRetryAfter is the Retry-After of the default answers when RetryAfter
// is not given.
const DefaultRetryAfter = time.Second

// Option configures Lock and TxLock. Invalid values panic when the
// middleware is built, never per request.
type Option func(*config)

// Responder writes the answer to a request that did not get its lock. err
// wraps ErrBadKey, ErrBusy, ErrWaitTimeout, ErrTooManyWaiters or
// ErrUnavailable, and the cause; it may name database internals and is not
// meant for clients. retryAfter is the configured RetryAfter.
type Responder func(w http.ResponseWriter, r *http.Request, err error, retryAfter time.Duration)

// Hooks are optional callbacks for metrics and logs. They run synchronously
// on the request's goroutine (Lost on another goroutine) and must not block.
type Hooks struct {
	// Rejected runs for every request answered by the middleware, with the
	// error given to the Responder. key is the zero Key for ErrBadKey.
	Rejected func(r *http.Request, key keyspace.Key, err error)
	// Acquired runs when the lock is granted, before the handler; waited is
	// the time the acquire took (pool checkout and, for TxLock, BEGIN
	// included).
	Acquired func(r *http.Request, key keyspace.Key, waited time.Duration)
	// Lost runs when Lock's lease is lost while the handler runs, just
	// before the request context is cancelled; err wraps advisory.ErrLockLost.
	Lost func(r *http.Request, key keyspace.Key, err error)
	// Waiting runs when a request found its key busy and starts to wait for
	// it (WaitUpTo), admitted under MaxWaiters; a request turned away with
	// ErrTooManyWaiters gets Rejected instead.
	Waiting func(r *http.Request, key keyspace.Key)
}

type config struct {
	wait       time.Duration // 0: fail fast
	maxWaiters int
	sharedSafe bool
	retryAfter time.Duration
	respond    Responder
	hooks      Hooks
	logger     *slog.Logger
	txOpts     *sql.TxOptions
}

func newConfig(opts []Option) config {
	c := config{maxWaiters: DefaultMaxWaiters, retryAfter: DefaultRetryAfter, respond: DefaultResponder}
	for _, o := range opts {
		if o == nil {
			panic("middleware: nil Option")
		}
		o(&c)
	}
	return c
}

// FailFast makes the middleware try the lock once and answer 409 Conflict
// (ErrBusy) at once if it is held elsewhere. This is the default.
func FailFast() Option { return func(c *config) { c.wait = 0 } }

// WaitUpTo makes the middleware wait for the lock up to d, then answer 503
// (ErrWaitTimeout). For Lock, the key is tried first, and only a key held
// elsewhere is waited for, one round trip later: d bounds that wait,
// its pool checkout included (a context deadline; advisory discards the
// connection of a wait cut short that way, so a timeout costs a
// reconnection). For TxLock it is
// the server's lock_timeout of the lock statement, which leaves the
// connection usable. d must be positive.
func WaitUpTo(d time.Duration) Option {
	if d <= 0 {
		panic("middleware: WaitUpTo needs a positive duration")
	}
	return func(c *config) { c.wait = d }
}

// MaxWaiters caps how many requests of one middleware (one call of Lock or
// TxLock) may wait at the same time for one key that they found busy; a
// request that finds its key busy beyond the cap is answered 503
// (ErrTooManyWaiters) at once. Only waits count: a request that takes a
// free key, and every request of a fail-fast middleware (which answers 409
// instead of waiting), never meets the cap. The cap is per key, so a hot key
// cannot turn away the requests for other keys: what a waiter waits behind
// is the holder and the waiters of its own key, and when n waiters each hold
// the key for t, a newcomer with n*t beyond WaitUpTo would time out anyway.
// n must be at least 1; the default is DefaultMaxWaiters.
//
// Waiting for a key held by another request of the same Locker pins no
// connection (advisory queues them in memory); a TxLock waiter pins the
// connection of its transaction. See the package documentation for sizing
// the pool.
func MaxWaiters(n int) Option {
	if n < 1 {
		panic("middleware: MaxWaiters needs at least 1")
	}
	return func(c *config) { c.maxWaiters = n }
}

// SharedForSafeMethods takes the lock in shared mode for GET and HEAD
// requests, so readers of one resource do not exclude each other, and
// exclusive for every other method.
func SharedForSafeMethods() Option { return func(c *config) { c.sharedSafe = true } }

// RetryAfter sets the Retry-After of the 409 and 503 answers, rounded up to
// whole seconds as HTTP wants (default DefaultRetryAfter). d must be
// positive.
func RetryAfter(d time.Duration) Option {
	if d <= 0 {
		panic("middleware: RetryAfter needs a positive duration")
	}
	return func(c *config) { c.retryAfter = d }
}

// WithResponder replaces DefaultResponder, e.g. to answer in JSON.
func WithResponder(f Responder) Option {
	if f == nil {
		panic("middleware: nil Responder")
	}
	return func(c *config) { c.respond = f }
}

// WithHooks installs callbacks; each nil field costs nothing.
func WithHooks(h Hooks) Option { return func(c *config) { c.hooks = h } }

// WithLogger logs rejections at Debug (ErrUnavailable at Error), lost locks
// at Warn and failed releases, commits and rollbacks at Error. A nil logger,
// the default, logs nothing.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithTxOptions sets the isolation level and read-only flag of the
// transactions that TxLock begins. Lock, which begins none, panics if given
// it.
func WithTxOptions(o *sql.TxOptions) Option { return func(c *config) { c.txOpts = o } }
