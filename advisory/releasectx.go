package advisory

import (
	"context"
	"sync/atomic"
	"time"
)

// releaseBound hands out the deadline that bounds a release (releaseTimeout).
// One shared context serves every release that starts within a second, so
// that a release costs no timer, no channel and no context tree of its own:
// each gets a deadline between releaseTimeout and releaseTimeout plus a
// second after it starts. A context that is replaced is never cancelled: its
// own timer ends it at its deadline, after every release that used it.
type releaseBound struct {
	cur atomic.Pointer[boundCtx]
}

// boundCtx is one shared deadline context.
type boundCtx struct {
	ctx      context.Context
	cancel   context.CancelFunc // kept only so that the context's resources have an owner
	deadline int64              // ctx's deadline (mono)
}

// context returns ctx's values with a deadline at least timeout away (the
// same timeout on every call). It takes no lock: the shared context is
// replaced with a compare-and-swap.
func (b *releaseBound) context(ctx context.Context, timeout time.Duration) context.Context {
	now := mono()
	cur := b.cur.Load()
	if cur == nil || cur.deadline-now < int64(timeout) {
		d := timeout + time.Second
		next := &boundCtx{deadline: now + int64(d)}
		next.ctx, next.cancel = context.WithTimeout(context.Background(), d)
		if b.cur.CompareAndSwap(cur, next) {
			cur = next
		} else {
			// Another release renewed it first: use that one.
			next.cancel()
			cur = b.cur.Load()
		}
	}
	if ctx.Done() != nil {
		ctx = context.WithoutCancel(ctx)
	}
	return releaseCtx{Context: ctx, bound: cur.ctx}
}

// releaseCtx is the context of one release: the values of the caller's
// context (never its cancellation), the deadline and end of the shared one.
type releaseCtx struct {
	context.Context                 // the caller's, for values
	bound           context.Context // the shared deadline
}

func (c releaseCtx) Deadline() (time.Time, bool) { return c.bound.Deadline() }
func (c releaseCtx) Done() <-chan struct{}       { return c.bound.Done() }
func (c releaseCtx) Err() error                  { return c.bound.Err() }

// Value looks in the caller's context first, then in the shared one, which
// also lets context.AfterFunc (how pgx watches a statement's context) find
// the shared context's canceller and register with it instead of starting a
// goroutine per statement.
func (c releaseCtx) Value(key any) any {
	if v := c.Context.Value(key); v != nil {
		return v
	}
	return c.bound.Value(key)
}
