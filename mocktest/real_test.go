package mocktest_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/mocktest"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// failure is one failure mode, produced once by a real server (on each
// driver) and once by the mock; check must accept both errors.
type failure struct {
	name  string
	real  func(t *testing.T, db *sql.DB) error
	mock  func(t *testing.T) error
	check func(err error) error
}

var failures = []failure{
	{
		name: "session lock_timeout",
		real: func(t *testing.T, db *sql.DB) error {
			ctx := context.Background()
			holder, err := advisory.New(db).Lock(ctx, keyA)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Release(ctx)
			_, err = advisory.New(db, advisory.WithLockTimeout(100*time.Millisecond)).Lock(ctx, keyA)
			return err
		},
		mock: func(t *testing.T) error {
			_, m := mocktest.New(t, mocktest.WithLockTimeout(100*time.Millisecond))
			m.ExpectLockTimeout(keyA)
			_, err := m.Locker().Lock(context.Background(), keyA)
			return err
		},
		check: func(err error) error {
			return want(errors.Is(err, advisory.ErrLockTimeout) && pgerr.SQLState(err) == pgerr.LockNotAvailable,
				"advisory.ErrLockTimeout with SQLSTATE 55P03")
		},
	},
	{
		name: "transaction lock_timeout",
		real: func(t *testing.T, db *sql.DB) error {
			ctx := context.Background()
			holder := begin(t, db)
			defer holder.Rollback()
			if err := txlock.Lock(ctx, holder, keyA); err != nil {
				t.Fatal(err)
			}
			tx := begin(t, db)
			defer tx.Rollback()
			return txlock.Lock(ctx, tx, keyA, txlock.WithLockTimeout(100*time.Millisecond))
		},
		mock: func(t *testing.T) error {
			db, m := mocktest.New(t)
			m.ExpectBegin()
			m.ExpectXactLockTimeout(keyA, mocktest.WithLockTimeout(100*time.Millisecond))
			m.ExpectRollback()
			tx := begin(t, db)
			defer tx.Rollback()
			return txlock.Lock(context.Background(), tx, keyA, txlock.WithLockTimeout(100*time.Millisecond))
		},
		check: func(err error) error {
			return want(errors.Is(err, txlock.ErrLockTimeout) && errors.Is(err, advisory.ErrLockTimeout) &&
				pgerr.SQLState(err) == pgerr.LockNotAvailable, "txlock.ErrLockTimeout with SQLSTATE 55P03")
		},
	},
	{
		name: "session try refused",
		real: func(t *testing.T, db *sql.DB) error {
			ctx := context.Background()
			holder, err := advisory.New(db).Lock(ctx, keyB)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Release(ctx)
			_, err = advisory.New(db).TryLock(ctx, keyB)
			return err
		},
		mock: func(t *testing.T) error {
			_, m := mocktest.New(t)
			m.ExpectTryLock(keyB, false)
			_, err := m.Locker().TryLock(context.Background(), keyB)
			return err
		},
		check: func(err error) error { return want(errors.Is(err, advisory.ErrNotAcquired), "advisory.ErrNotAcquired") },
	},
	{
		name: "transaction try refused",
		real: func(t *testing.T, db *sql.DB) error {
			ctx := context.Background()
			holder := begin(t, db)
			defer holder.Rollback()
			if err := txlock.Lock(ctx, holder, keyB); err != nil {
				t.Fatal(err)
			}
			tx := begin(t, db)
			defer tx.Rollback()
			return txlock.Lock(ctx, tx, keyB, txlock.WithTry())
		},
		mock: func(t *testing.T) error {
			db, m := mocktest.New(t)
			m.ExpectBegin()
			m.ExpectXactTryLock(keyB, false)
			m.ExpectRollback()
			tx := begin(t, db)
			defer tx.Rollback()
			return txlock.Lock(context.Background(), tx, keyB, txlock.WithTry())
		},
		check: func(err error) error { return want(errors.Is(err, txlock.ErrNotAcquired), "txlock.ErrNotAcquired") },
	},
	{
		name: "connection lost during a lock wait",
		real: func(t *testing.T, db *sql.DB) error {
			ctx := context.Background()
			holder, err := advisory.New(db).Lock(ctx, keyC)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Release(ctx)
			got := make(chan error, 1)
			go func() {
				_, err := advisory.New(db).Lock(ctx, keyC)
				got <- err
			}()
			testkit.TerminateBackend(t, db, waiter(t, db))
			return <-got
		},
		mock: func(t *testing.T) error {
			_, m := mocktest.New(t)
			m.ExpectLockConnLost(keyC)
			_, err := m.Locker().Lock(context.Background(), keyC)
			return err
		},
		check: func(err error) error {
			// lib/pq reports driver.ErrBadConn, pgx the server's 57P01; the
			// mock's error is both.
			return want(err != nil && !errors.Is(err, advisory.ErrLockTimeout) && !errors.Is(err, advisory.ErrNotAcquired) &&
				(errors.Is(err, driver.ErrBadConn) || pgerr.SQLState(err) == pgerr.AdminShutdown),
				"driver.ErrBadConn or SQLSTATE 57P01")
		},
	},
	{
		name: "keepalive finds the session gone",
		real: func(t *testing.T, db *sql.DB) error {
			ctx := context.Background()
			lease, err := advisory.New(db, advisory.WithKeepAlive(50*time.Millisecond)).Lock(ctx, keyA)
			if err != nil {
				t.Fatal(err)
			}
			testkit.TerminateBackend(t, db, lease.PID())
			return lostErr(t, lease)
		},
		mock: func(t *testing.T) error {
			_, m := mocktest.New(t)
			m.ExpectLock(keyA)
			m.ExpectKeepAliveLost()
			lease, err := m.Locker(advisory.WithKeepAlive(10*time.Millisecond)).Lock(context.Background(), keyA)
			if err != nil {
				t.Fatal(err)
			}
			return lostErr(t, lease)
		},
		check: func(err error) error { return want(errors.Is(err, advisory.ErrLockLost), "advisory.ErrLockLost") },
	},
}

// TestFailuresMatchServer: each failure mode of the mock comes out of
// advisory and txlock as the same sentinel as the real failure does, on both
// drivers.
func TestFailuresMatchServer(t *testing.T) {
	for _, f := range failures {
		t.Run(f.name+"/mock", func(t *testing.T) {
			if err := f.check(f.mock(t)); err != nil {
				t.Error(err)
			}
		})
	}
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		db := itest.Open(t, driverName)
		for _, f := range failures {
			t.Run(f.name, func(t *testing.T) {
				if err := f.check(f.real(t, db)); err != nil {
					t.Error(err)
				}
			})
		}
		testkit.WaitConnsIdle(t, db)
		testkit.WaitNoAdvisoryLocks(t, db)
	})
}

// TestUnlockFalseMock: a release that the server answers false (the session
// no longer held the lock) is ErrLockLost. A real server only answers so
// when something else released the lock on the lease's own session, which
// advisory never lets happen, so this mode has no server-side twin here.
func TestUnlockFalseMock(t *testing.T) {
	_, m := mocktest.New(t)
	m.ExpectLock(keyA)
	m.ExpectUnlock(keyA, false)
	lease, err := m.Locker().Lock(context.Background(), keyA)
	if err != nil {
		t.Fatal(err)
	}
	if err := lease.Release(context.Background()); !errors.Is(err, advisory.ErrLockLost) {
		t.Fatalf("Release = %v; want ErrLockLost", err)
	}
}

func want(ok bool, what string) error {
	if ok {
		return nil
	}
	return fmt.Errorf("want an error matching %s", what)
}

func begin(t *testing.T, db *sql.DB) *sql.Tx {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

// waiter returns the pid of the backend that waits for an advisory lock in
// db's database, waiting up to 20 s for one to appear.
func waiter(t *testing.T, db *sql.DB) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		locks, err := testkit.AdvisoryLocks(context.Background(), db)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range locks {
			if !l.Granted {
				return l.PID
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no backend waits for an advisory lock")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lostErr waits (up to 20 s) for lease to be lost, releases it, and returns
// its loss error.
func lostErr(t *testing.T, lease *advisory.Lease) error {
	t.Helper()
	select {
	case <-lease.Lost():
	case <-time.After(20 * time.Second):
		t.Fatal("lease not lost")
	}
	err := lease.Err()
	if rerr := lease.Release(context.Background()); !errors.Is(rerr, advisory.ErrLockLost) {
		t.Errorf("Release of a lost lease = %v; want ErrLockLost", rerr)
	}
	return err
}
