package middleware

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/keyqueue"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Singleton wraps a periodic job so that, of all the processes (and
// goroutines) that run it at the same time, only the one that wins key runs
// it. Each call of the returned function tries the lock once (TryLock); if
// another session holds it, the call returns an error matching ErrSkipped
// (and advisory.ErrNotAcquired) at once and job does not run. Otherwise job
// runs with a context that carries the lease (Lease) and is cancelled, with
// a cause wrapping advisory.ErrLockLost, if the lock is lost; the lock is
// released when job returns or panics.
//
// The returned function returns ErrSkipped, the acquire's error, an error
// wrapping advisory.ErrLockLost if the lock was lost while job ran (joined
// with job's error), job's error, or the release's error, in that order.
//
// A job that finishes before the others have tried lets a latecomer win the
// same round; schedulers that need "once per period" should also record the
// period done (e.g. in a table, on the lease's connection).
//
// The returned function is safe for concurrent use. Singleton panics if
// locker or job is nil. For a job locked by name, SingletonNamed says the
// name in its errors where Singleton can only say the key.
func Singleton(locker *advisory.Locker, key keyspace.Key, job func(ctx context.Context) error) func(ctx context.Context) error {
	return singleton(locker, "", key, job)
}

// SingletonNamed is Singleton on keyspace.Hash(name), the key that pglock
// run and every client of the same rule take for name; its ErrSkipped error
// names the job: `middleware: job "daily-report" skipped: another session
// holds its lock`. It panics if locker or job is nil or name is empty.
func SingletonNamed(locker *advisory.Locker, name string, job func(ctx context.Context) error) func(ctx context.Context) error {
	if name == "" {
		panic("middleware: SingletonNamed with an empty name")
	}
	return singleton(locker, name, keyspace.Hash(name), job)
}

func singleton(locker *advisory.Locker, name string, key keyspace.Key, job func(ctx context.Context) error) func(ctx context.Context) error {
	if locker == nil {
		panic("middleware: Singleton with a nil *advisory.Locker")
	}
	if job == nil {
		panic("middleware: Singleton with a nil job")
	}
	return func(ctx context.Context) error {
		lease, err := locker.TryLock(ctx, key)
		if err != nil {
			if errors.Is(err, advisory.ErrNotAcquired) {
				return skipped(name, key, err)
			}
			return err
		}
		return runHeld(ctx, lease, job)
	}
}

// Keyed runs functions one per key at a time across all processes that use
// the same database, and functions of different keys in parallel: the shape
// of a queue consumer that must not process two messages of one order
// together. Within a process, callers of one key queue up in memory first, so
// a hot key pins one connection of the pool, not one per waiting message.
// A Keyed is safe for concurrent use.
type Keyed struct {
	locker *advisory.Locker
	queue  keyqueue.Queue[keyspace.Key] // the callers of one key inside the process, in order
}

// NewKeyed returns a Keyed over locker. It panics if locker is nil.
func NewKeyed(locker *advisory.Locker) *Keyed {
	if locker == nil {
		panic("middleware: NewKeyed with a nil *advisory.Locker")
	}
	return &Keyed{locker: locker}
}

// Handle waits until no other caller, in this process or another, runs a
// function for key, then runs fn under key's exclusive session lock. The
// wait is bounded by ctx only (and by the Locker's WithLockTimeout). fn's
// context carries the lease (Lease) and is cancelled, with a cause wrapping
// advisory.ErrLockLost, if the lock is lost; the lock is released when fn
// returns or panics.
//
// Handle returns the wait's error (wrapping ctx's), an error wrapping
// advisory.ErrLockLost if the lock was lost while fn ran (joined with fn's
// error), fn's error, or the release's error, in that order.
func (k *Keyed) Handle(ctx context.Context, key keyspace.Key, fn func(ctx context.Context) error) error {
	if fn == nil {
		return errors.New("middleware: Keyed.Handle with a nil function")
	}
	if k == nil || k.locker == nil {
		return errors.New("middleware: Keyed.Handle on a Keyed without a Locker (make it with NewKeyed)")
	}
	turn, err := k.queue.Lock(ctx, key)
	if err != nil {
		return fmt.Errorf("middleware: handle %v: %w", key, context.Cause(ctx))
	}
	defer turn.Release()
	lease, err := k.locker.Lock(ctx, key)
	if err != nil {
		return err
	}
	return runHeld(ctx, lease, fn)
}

// runHeld runs fn while lease is held, with a context cancelled on loss, and
// releases the lease when fn returns or panics.
func runHeld(ctx context.Context, lease *advisory.Lease, fn func(context.Context) error) error {
	fctx, cancel := context.WithCancelCause(context.WithValue(ctx, leaseKey{}, lease))
	go func() {
		select {
		case <-fctx.Done():
		case <-lease.Lost():
			cancel(lease.Err())
		}
	}()
	done := false
	defer func() {
		if !done { // fn panicked
			cancel(nil)
			_ = lease.Release(ctx)
		}
	}()
	ferr := fn(fctx)
	done = true
	cancel(nil)
	rerr := lease.Release(ctx)
	select {
	case <-lease.Lost():
		if ferr != nil {
			return fmt.Errorf("%w (%w)", lease.Err(), ferr)
		}
		return lease.Err()
	default:
	}
	if ferr != nil {
		return ferr
	}
	return rerr
}
