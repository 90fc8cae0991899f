package advisory_test

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// The tests of this file pin the promise that a lease whose Err is nil holds
// its lock on the server, and that a nil Release means the lock was held
// until it was given up. Each interleaving is driven step by step; the
// keepalive is off (an hour), so that only the path under test can notice
// a loss.

// queued starts l.Lock(key) on a goroutine and returns once the goroutine
// waits in l's in-process queue; the lease or error arrives on the channel.
func queued(t *testing.T, ctx context.Context, l *advisory.Locker, key keyspace.Key) <-chan lockResult {
	t.Helper()
	before := advisory.QueueWaiting(l, key)
	out := make(chan lockResult, 1)
	go func() {
		ls, err := l.Lock(ctx, key)
		out <- lockResult{ls, err}
	}()
	waitFor(t, 10*time.Second, "a goroutine queued for the key", func() bool {
		return advisory.QueueWaiting(l, key) > before
	})
	return out
}

type lockResult struct {
	lease *advisory.Lease
	err   error
}

// takeOver makes another process take key once the server has freed it, and
// returns that process's connection (holding key until it is closed).
func (e *env) takeOver(t *testing.T, key keyspace.Key) *sql.Conn {
	t.Helper()
	ctx := timeout(t, 20*time.Second)
	c, err := e.admin.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	n := bigint(key)
	waitFor(t, 10*time.Second, "another process to take the freed key", func() bool {
		var ok bool
		if err := c.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1::int8)`, n).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	})
	return c
}

// bigint returns the number of a bigint key (the tests' keys are).
func bigint(key keyspace.Key) int64 {
	n, ok := key.Int64()
	if !ok {
		panic("bigint: a pair key")
	}
	return n
}

// expectNoFalseLease checks what a goroutine queued behind a lease that was
// lost gets: never a lease while other (another process) holds key. It lets
// other go once the queued goroutine waits on the server, and then expects a
// lease that really holds key.
func (e *env) expectNoFalseLease(t *testing.T, key keyspace.Key, next <-chan lockResult, other *sql.Conn) {
	t.Helper()
	waitFor(t, 10*time.Second, "the queued goroutine to wait on the server", func() bool {
		select {
		case r := <-next:
			if r.err == nil {
				t.Fatalf("the queued goroutine got a lease (Err %v) while another process holds the key", r.lease.Err())
			}
			t.Fatalf("the queued goroutine failed: %v", r.err)
		default:
		}
		return e.waiters(t, key) > 0
	})
	if _, err := other.ExecContext(timeout(t, 10*time.Second), `SELECT pg_advisory_unlock($1::int8)`, bigint(key)); err != nil {
		t.Fatal(err)
	}
	r := <-next
	if r.err != nil {
		t.Fatalf("the queued goroutine after the key was freed: %v", r.err)
	}
	if got := e.holders(t, key); len(got) != 1 || got[0] != r.lease.PID() {
		t.Fatalf("pg_locks holders %v, the lease says backend %d", got, r.lease.PID())
	}
	if err := r.lease.Release(timeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// waiters returns how many sessions wait (not granted) for key.
func (e *env) waiters(t *testing.T, key keyspace.Key) int {
	t.Helper()
	return len(e.lockRows(t, key, false))
}

// lossCounter counts Hooks.Lost calls.
type lossCounter struct{ n atomic.Int32 }

func (c *lossCounter) hooks() advisory.Hooks {
	return advisory.Hooks{Lost: func(keyspace.Key, error) { c.n.Add(1) }}
}

// checkLost checks that ls is lost in every way it can say so.
func checkLost(t *testing.T, ls *advisory.Lease, hook *lossCounter) {
	t.Helper()
	if err := ls.Err(); !errors.Is(err, advisory.ErrLockLost) {
		t.Errorf("Err() = %v, want ErrLockLost", err)
	}
	select {
	case <-ls.Lost():
	default:
		t.Error("Lost() is open")
	}
	if hook != nil && hook.n.Load() == 0 {
		t.Error("the Lost hook did not run")
	}
}

// TestHandoffVerifiesTheSession (issue: the handoff's unchecked release). A
// holds the key and B, of the same Locker, is queued behind it. A's backend
// is terminated after A's last statement, and another process takes the
// freed key. A's Release must not report a clean release, and must not hand
// B a lock that nobody holds for it.
func TestHandoffVerifiesTheSession(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 60*time.Second)
		hook := &lossCounter{}
		l := advisory.New(e.db, advisory.WithKeepAlive(time.Hour), advisory.WithHooks(hook.hooks()))
		key := testKey(t)
		a, err := l.Lock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		next := queued(t, ctx, l, key)
		e.terminate(t, a.PID())
		other := e.takeOver(t, key)
		if err := a.Release(ctx); !errors.Is(err, advisory.ErrLockLost) {
			t.Errorf("Release of a lease whose backend was terminated = %v, want ErrLockLost", err)
		}
		checkLost(t, a, hook)
		e.expectNoFalseLease(t, key, next, other)
	})
}

// TestTxContextEnds (issue: a Tx whose context ends destroys the session).
// The context given to Tx ends while the transaction is open. Afterwards the
// lease is either live and verified (pg_locks shows its backend holding the
// key) or lost in every way; never a lease that says it holds a freed lock.
func TestTxContextEnds(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 60*time.Second)
		hook := &lossCounter{}
		l := advisory.New(e.db, advisory.WithKeepAlive(time.Hour), advisory.WithHooks(hook.hooks()))
		key := testKey(t)
		a, err := l.Lock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		next := queued(t, ctx, l, key)
		txctx, cancel := context.WithCancel(ctx)
		err = a.Tx(txctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(txctx, "SELECT 1"); err != nil {
				return err
			}
			cancel()
			_, err := tx.ExecContext(txctx, "SELECT 1")
			return err
		})
		if err == nil {
			t.Fatal("Tx with its context cancelled inside returned nil")
		}
		if a.Err() == nil {
			if got := e.holders(t, key); len(got) != 1 || got[0] != a.PID() {
				t.Fatalf("after Tx = %v the lease says held, pg_locks holders %v, lease backend %d", err, got, a.PID())
			}
			if err := a.Release(ctx); err != nil {
				t.Fatal(err)
			}
			r := <-next
			if r.err != nil {
				t.Fatal(r.err)
			}
			if err := r.lease.Release(ctx); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Logf("Tx = %v; lease lost: %v", err, a.Err())
		if !errors.Is(err, advisory.ErrLockLost) {
			t.Errorf("Tx = %v: the lease was lost, Tx's error must say so", err)
		}
		checkLost(t, a, hook)
		other := e.takeOver(t, key)
		if err := a.Release(ctx); !errors.Is(err, advisory.ErrLockLost) {
			t.Errorf("Release of the lost lease = %v, want ErrLockLost", err)
		}
		e.expectNoFalseLease(t, key, next, other)
	})
}

// TestTxFindsTheLoss (issue: Lease.Tx when a statement inside fn finds the
// loss). The holder's backend is terminated while fn runs; fn's next
// statement fails. Tx's error must wrap ErrLockLost, and the lease be lost.
func TestTxFindsTheLoss(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 60*time.Second)
		hook := &lossCounter{}
		l := advisory.New(e.db, advisory.WithKeepAlive(time.Hour), advisory.WithHooks(hook.hooks()))
		a, err := l.Lock(ctx, testKey(t))
		if err != nil {
			t.Fatal(err)
		}
		err = a.Tx(ctx, func(tx *sql.Tx) error {
			e.terminate(t, a.PID())
			_, err := tx.ExecContext(ctx, "SELECT 1")
			return err
		})
		if !errors.Is(err, advisory.ErrLockLost) {
			t.Errorf("Tx = %v, want an error wrapping ErrLockLost", err)
		}
		checkLost(t, a, hook)
		if err := a.Release(ctx); !errors.Is(err, advisory.ErrLockLost) {
			t.Errorf("Release = %v, want ErrLockLost", err)
		}
	})
}

// TestReleaseDuringTx (issue: Release during a Tx swallows the loss that the
// Tx finds). Release is called while a Tx runs; the backend dies before the
// commit. The Tx must report the loss (not ErrReleased), Release must too
// (not nil), and the goroutine queued behind must not get a false lease.
func TestReleaseDuringTx(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 60*time.Second)
		hook := &lossCounter{}
		l := advisory.New(e.db, advisory.WithKeepAlive(time.Hour), advisory.WithHooks(hook.hooks()))
		key := testKey(t)
		a, err := l.Lock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		next := queued(t, ctx, l, key)
		inTx, proceed := make(chan struct{}), make(chan struct{})
		txErr := make(chan error, 1)
		go func() {
			txErr <- a.Tx(ctx, func(tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, "SELECT 1"); err != nil {
					return err
				}
				close(inTx)
				<-proceed
				return nil
			})
		}()
		<-inTx
		e.terminate(t, a.PID())
		relErr := make(chan error, 1)
		go func() { relErr <- a.Release(ctx) }()
		waitFor(t, 10*time.Second, "Release to start", func() bool { return advisory.Releasing(a) })
		close(proceed)
		if err := <-txErr; !errors.Is(err, advisory.ErrLockLost) {
			t.Errorf("Tx whose commit met the dead backend = %v, want ErrLockLost", err)
		}
		if err := <-relErr; !errors.Is(err, advisory.ErrLockLost) {
			t.Errorf("Release during that Tx = %v, want ErrLockLost", err)
		}
		checkLost(t, a, hook)
		other := e.takeOver(t, key)
		e.expectNoFalseLease(t, key, next, other)
	})
}
