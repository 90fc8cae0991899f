package advisory

import (
	"context"
	"sync"
	"time"
)

// releaseBound hands out the deadline that bounds a release (releaseTimeout).
// One shared context serves every release that starts within a second, so
// that a release costs no timer, no channel and no context tree of its own:
// each gets a deadline between releaseTimeout and releaseTimeout plus a
// second after it starts. A context that is replaced is never cancelled: its
// own timer ends it at its deadline, after every release that used it.
type releaseBound struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc // kept only so that the context's resources have an owner
}

// context returns ctx's values with a deadline at least releaseTimeout away.
func (b *releaseBound) context(ctx context.Context) context.Context {
	now := time.Now()
	b.mu.Lock()
	if b.ctx == nil {
		b.renew(now)
	} else if d, _ := b.ctx.Deadline(); d.Sub(now) < releaseTimeout {
		b.renew(now)
	}
	bound := b.ctx
	b.mu.Unlock()
	if ctx.Done() != nil {
		ctx = context.WithoutCancel(ctx)
	}
	return releaseCtx{Context: ctx, bound: bound}
}

// renew starts a new shared context; b.mu is held.
func (b *releaseBound) renew(now time.Time) {
	b.ctx, b.cancel = context.WithDeadline(context.Background(), now.Add(releaseTimeout+time.Second))
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
