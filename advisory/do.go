package advisory

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Do takes key exclusively (as Lock), runs fn, and releases. The context
// handed to fn is cancelled if the lock is lost, with an error wrapping
// ErrLockLost as its cause (context.Cause), and carries the lease
// (LeaseFromContext). Do returns the acquire's error, else, if the lock was
// lost while fn ran, an error wrapping ErrLockLost (and fn's error, if any),
// else fn's error, else the release's error. The lease is released even if
// fn panics.
func (l *Locker) Do(ctx context.Context, key keyspace.Key, fn func(ctx context.Context) error) (err error) {
	if fn == nil {
		return errors.New("advisory: Do with a nil function")
	}
	lease, err := l.Lock(ctx, key)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := lease.AfterLost(func(err error) { cancel(err) })
	defer stop()

	released := false
	defer func() {
		if !released { // fn panicked
			_ = lease.Release(ctx)
		}
	}()
	ferr := fn(context.WithValue(fctx, leaseKey{}, lease))
	released = true
	rerr := lease.Release(ctx)
	if lerr := lease.lossErr(); lerr != nil {
		if ferr != nil {
			return fmt.Errorf("%w (%w)", lerr, ferr)
		}
		return lerr
	}
	if ferr != nil {
		return ferr
	}
	return rerr
}

type leaseKey struct{}

// LeaseFromContext returns the lease that Do holds while its function runs.
func LeaseFromContext(ctx context.Context) (*Lease, bool) {
	ls, ok := ctx.Value(leaseKey{}).(*Lease)
	return ls, ok && ls != nil
}

func errorsIsPooler(err error) bool { return errors.Is(err, ErrPooler) }
