package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// ErrLimited means that the request's name (its tenant) already had the
// most requests Limit allows running, across all processes, and that the
// middleware did not wait (FailFast) or its wait (WaitUpTo) ran out: 429.
var ErrLimited = errors.New("middleware: too many concurrent requests for this name")

// NameFunc derives the name of a request that Limit counts under, such as
// its tenant. An error, or an empty name, is answered 400 (ErrBadKey).
type NameFunc func(*http.Request) (string, error)

// Limit returns middleware that lets at most n requests of one name (the
// one nameFn derives, such as a tenant) run at once, across every process
// that serves them with the same ns and n: each request holds a slot of
// the advisory.Semaphore of its name (n slot keys in ns, SemaphoreSlots)
// while the handler runs, taken through locker.
//
// By default (FailFast) a request whose name has no free slot is answered
// 429 Too Many Requests with Retry-After (ErrLimited) at once; with
// WaitUpTo it waits up to that bound (in the process's memory behind the
// other requests of the name, one of which asks the server; see
// advisory.Semaphore) and then gets 429. 429 rather than 503 because the
// limit is the client's (its name's) share, not the service's health: the
// service answers other names as usual, and the client should slow down.
// A name that cannot be derived gets 400 (ErrBadKey); a slot that could not
// be taken for another reason (the database is down) 503 (ErrUnavailable).
// MaxWaiters caps the requests of one name that wait (503 beyond it).
//
// While the handler runs the request context carries the slot's lease
// (Slot returns it: its Tx runs on the session that holds the slot) and
// is cancelled if the slot is lost. The slot is released when the handler
// returns, also when it panics.
//
// Limit panics if locker or nameFn is nil, n is out of range
// (advisory.NewSemaphore), or an option is invalid.
func Limit(locker *advisory.Locker, ns keyspace.Namespace, nameFn NameFunc, n int, opts ...Option) func(http.Handler) http.Handler {
	if locker == nil {
		panic("middleware: Limit with a nil *advisory.Locker")
	}
	if nameFn == nil {
		panic("middleware: Limit with a nil NameFunc")
	}
	if _, err := advisory.NewSemaphore(locker, ns, "probe", n); err != nil {
		panic(fmt.Sprintf("middleware: Limit: %v", err))
	}
	c := newConfig(opts)
	if c.txOpts != nil || c.sharedSafe {
		panic("middleware: WithTxOptions and SharedForSafeMethods do not apply to Limit")
	}
	lim := &limiter{locker: locker, ns: ns, n: n, cfg: &c, waiters: newWaiters(c.maxWaiters), sems: map[string]*semEntry{}}
	return func(next http.Handler) http.Handler {
		if next == nil {
			panic("middleware: Limit around a nil http.Handler")
		}
		return &limitHandler{lim: lim, next: next, nameFn: nameFn}
	}
}

// limiter keeps one Semaphore per name while requests of the name run,
// so that the requests of a name queue in memory together.
type limiter struct {
	locker  *advisory.Locker
	ns      keyspace.Namespace
	n       int
	cfg     *config
	waiters *waiters

	mu   sync.Mutex
	sems map[string]*semEntry
}

type semEntry struct {
	s    *advisory.Semaphore
	refs int
}

func (lm *limiter) get(name string) *advisory.Semaphore {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	e := lm.sems[name]
	if e == nil {
		s, err := advisory.NewSemaphore(lm.locker, lm.ns, name, lm.n)
		if err != nil {
			panic(err) // checked in Limit, and name is not empty
		}
		e = &semEntry{s: s}
		lm.sems[name] = e
	}
	e.refs++
	return e.s
}

func (lm *limiter) put(name string) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	if e := lm.sems[name]; e != nil {
		if e.refs--; e.refs == 0 {
			delete(lm.sems, name)
		}
	}
}

type slotKey struct{}

// Slot returns the semaphore slot that Limit holds for the request whose
// context ctx is, or nil.
func Slot(ctx context.Context) *advisory.SemaphoreLease {
	sl, _ := ctx.Value(slotKey{}).(*advisory.SemaphoreLease)
	return sl
}

type limitHandler struct {
	lim    *limiter
	next   http.Handler
	nameFn NameFunc
}

func (h *limitHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := h.lim.cfg
	name, err := h.nameFn(r)
	if err == nil && name == "" {
		err = errors.New("empty name")
	}
	if err != nil {
		c.reject(w, r, keyspace.Key{}, badKey(err))
		return
	}
	key := advisory.SemaphoreSlots(h.lim.ns, name, 1)[0] // the name's first slot, for hooks and logs
	var start time.Time
	if c.hooks.Acquired != nil {
		start = time.Now()
	}
	sem := h.lim.get(name)
	defer h.lim.put(name)
	sl, err := h.acquire(r, sem, key)
	if err != nil {
		c.reject(w, r, key, err)
		return
	}
	if c.hooks.Acquired != nil {
		c.hooks.Acquired(r, sl.Key(), time.Since(start))
	}
	ctx, cancel := context.WithCancelCause(context.WithValue(r.Context(), slotKey{}, sl))
	stop := sl.AfterLost(func(err error) {
		if f := c.hooks.Lost; f != nil {
			f(r, sl.Key(), err)
		}
		c.log(ctx, slog.LevelWarn, "middleware: semaphore slot lost, request cancelled", r, sl.Key(), err)
		cancel(err)
	})
	defer func() {
		stop()
		cancel(nil)
		if err := sl.Release(ctx); err != nil {
			c.log(ctx, slog.LevelError, "middleware: release failed", r, sl.Key(), err)
		}
	}()
	h.next.ServeHTTP(w, r.WithContext(ctx))
}

// acquire takes a slot as the wait policy says and maps a failure to the
// reason the client is told.
func (h *limitHandler) acquire(r *http.Request, sem *advisory.Semaphore, key keyspace.Key) (*advisory.SemaphoreLease, error) {
	c := h.lim.cfg
	ctx := r.Context()
	sl, err := sem.TryAcquire(ctx)
	switch {
	case err == nil:
		return sl, nil
	case !errors.Is(err, advisory.ErrNotAcquired):
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	case c.wait == 0:
		return nil, fmt.Errorf("%w: %w", ErrLimited, err)
	case !h.lim.waiters.enter(key):
		return nil, fmt.Errorf("%w: %w", ErrTooManyWaiters, err)
	}
	defer h.lim.waiters.leave(key)
	if f := c.hooks.Waiting; f != nil {
		f(r, key)
	}
	wctx, cancel := context.WithTimeout(ctx, c.wait)
	defer cancel()
	sl, err = sem.Acquire(wctx)
	switch {
	case err == nil:
		return sl, nil
	case errors.Is(wctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		return nil, fmt.Errorf("%w: %w", ErrLimited, err)
	}
	return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
}
