package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Lock returns middleware that runs each request under a session advisory
// lock on the key keyFn derives from it, taken from locker.
//
// The lock is exclusive (shared for GET and HEAD with SharedForSafeMethods).
// By default the middleware does not wait: a key held elsewhere is answered
// 409 with Retry-After (FailFast); with WaitUpTo it waits up to a bound and
// then answers 503. The key is tried first; only a request that found it
// busy waits, one round trip later, and at most MaxWaiters of them wait for
// one key at the same time: one more is answered 503 at once (a free key is
// taken whatever the number of waiters). See the package documentation for
// every answer and for sizing the connection pool.
//
// While the handler runs, the request context carries the lease (see Lease)
// and is cancelled if the lock is lost (the lease's keepalive failed, its
// backend was terminated), with a cause that wraps advisory.ErrLockLost:
// check ctx.Done() before writes that the lock protects, or make writes to
// this database on the holding connection with Lease(ctx).Tx, which fails
// once the session that held the lock is gone. The lease is
// released when the handler returns, also when it panics (the panic then
// continues).
//
// The middleware and the handlers it wraps are safe for concurrent use; the
// MaxWaiters counts are shared by every handler one call of Lock wraps.
//
// Lock panics if locker or keyFn is nil or an option is invalid.
func Lock(locker *advisory.Locker, keyFn KeyFunc, opts ...Option) func(http.Handler) http.Handler {
	if locker == nil {
		panic("middleware: Lock with a nil *advisory.Locker")
	}
	if keyFn == nil {
		panic("middleware: Lock with a nil KeyFunc")
	}
	c := newConfig(opts)
	if c.txOpts != nil {
		panic("middleware: WithTxOptions applies to TxLock, not Lock")
	}
	w := newWaiters(c.maxWaiters)
	return func(next http.Handler) http.Handler {
		if next == nil {
			panic("middleware: Lock around a nil http.Handler")
		}
		return &lockHandler{next: next, locker: locker, keyFn: keyFn, cfg: &c, waiters: w}
	}
}

type lockHandler struct {
	next    http.Handler
	locker  *advisory.Locker
	keyFn   KeyFunc
	cfg     *config
	waiters *waiters
}

type leaseKey struct{}

// Lease returns the lease that Lock, Singleton or Keyed holds for the request
// or job whose context ctx is, or nil.
func Lease(ctx context.Context) *advisory.Lease {
	ls, _ := ctx.Value(leaseKey{}).(*advisory.Lease)
	return ls
}

func (h *lockHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := h.cfg
	key, err := h.keyFn(r)
	if err != nil {
		c.reject(w, r, keyspace.Key{}, badKey(err))
		return
	}
	shared := c.sharedSafe && (r.Method == http.MethodGet || r.Method == http.MethodHead)
	var start time.Time
	if c.hooks.Acquired != nil {
		start = time.Now()
	}
	lease, err := h.acquire(r, key, shared)
	if err != nil {
		c.reject(w, r, key, err)
		return
	}
	if c.hooks.Acquired != nil {
		c.hooks.Acquired(r, key, time.Since(start))
	}

	ctx, cancel := context.WithCancelCause(context.WithValue(r.Context(), leaseKey{}, lease))
	stop := lease.AfterLost(func(err error) { h.lost(ctx, cancel, err, r, key) })
	defer h.release(ctx, cancel, stop, lease, r, key)
	h.next.ServeHTTP(w, r.WithContext(ctx))
}

// acquire takes key as the wait policy says and maps a failure to the reason
// the client is told.
func (h *lockHandler) acquire(r *http.Request, key keyspace.Key, shared bool) (*advisory.Lease, error) {
	ctx := r.Context()
	// A try first, also when the policy is to wait: a free key, the common
	// case, then costs no deadline context (the drivers watch a
	// statement's context, which costs 600 to 900 bytes per request with a
	// deadline of its own). Only a busy key gets the bounded wait, one
	// round trip later.
	try, lock := h.locker.TryLock, h.locker.Lock
	if shared {
		try, lock = h.locker.TryLockShared, h.locker.LockShared
	}
	lease, err := try(ctx, key)
	switch {
	case err == nil:
		return lease, nil
	case !errors.Is(err, advisory.ErrNotAcquired):
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	case h.cfg.wait == 0:
		return nil, fmt.Errorf("%w: %w", ErrBusy, err)
	case !h.waiters.enter(key):
		return nil, fmt.Errorf("%w: %w", ErrTooManyWaiters, err)
	}
	defer h.waiters.leave(key)
	if f := h.cfg.hooks.Waiting; f != nil {
		f(r, key)
	}
	wctx, cancel := context.WithTimeout(ctx, h.cfg.wait)
	defer cancel()
	lease, err = lock(wctx, key)
	switch {
	case err == nil:
		return lease, nil
	case errors.Is(err, advisory.ErrLockTimeout),
		errors.Is(wctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		return nil, fmt.Errorf("%w: %w", ErrWaitTimeout, err)
	}
	return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// lost cancels the request context with the loss error; it runs (through
// Lease.AfterLost, without a watcher goroutine per request) if the lease is
// lost before the handler returns.
func (h *lockHandler) lost(ctx context.Context, cancel context.CancelCauseFunc, err error, r *http.Request, key keyspace.Key) {
	if f := h.cfg.hooks.Lost; f != nil {
		f(r, key, err)
	}
	h.cfg.log(ctx, slog.LevelWarn, "middleware: lock lost, request cancelled", r, key, err)
	cancel(err)
}

// release stops the loss callback, ends the request context (and whatever
// the handler left running on it) and gives the lock back.
func (h *lockHandler) release(ctx context.Context, cancel context.CancelCauseFunc, stop func() bool, lease *advisory.Lease, r *http.Request, key keyspace.Key) {
	stop()
	cancel(nil)
	if err := lease.Release(ctx); err != nil {
		select {
		case <-lease.Lost(): // logged by lost
		default:
			h.cfg.log(ctx, slog.LevelError, "middleware: release failed", r, key, err)
		}
	}
}
