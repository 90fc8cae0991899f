package advisory_test

import (
	"context"
	"database/sql/driver"
	"errors"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

func TestReleaseCancelledContext(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		l := advisory.New(e.db)
		key := testKey(t)
		ctx, cancel := context.WithCancel(context.Background())
		lease, err := l.Lock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := lease.Release(ctx); err != nil {
			t.Fatalf("Release under a cancelled context: %v", err)
		}
		if got := e.holders(t, key); len(got) != 0 {
			t.Fatalf("held by %v after Release", got)
		}
		// The connection went back to the pool: it was healthy and clean
		// (a multiplexed session's a moment after its last lease).
		waitFor(t, 5*time.Second, "the connection back in the pool", func() bool {
			s := e.db.Stats()
			return s.InUse == 0 && s.Idle == 1
		})
	})
}

// TestReleaseSilentNetwork: Release of a held lease while the network to the
// server is silent (packets dropped, nothing closed) returns within the
// release bound with an error that wraps context.DeadlineExceeded, and the
// connection is discarded, not pooled. On pgx the keepalive sweep interrupts
// the unlock through the socket's deadline (no context is given to pgx). lib/pq
// cannot interrupt a statement on a silent network: there the bound is the
// connection's TCP settings, as Lease.Release documents.
func TestReleaseSilentNetwork(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		if driver == "postgres" {
			t.Skip("lib/pq cannot interrupt a statement on a silent network (Lease.Release)")
		}
		e := setup(t, driver)
		p, db := e.throughProxy(t, driver)
		const bound, keepAlive = time.Second, time.Hour // no ping to notice the silence first
		l := advisory.New(db, advisory.WithDedicatedSessions(), advisory.WithKeepAlive(keepAlive))
		advisory.SetReleaseTimeout(l, bound)
		ctx := timeout(t, 30*time.Second)
		key := testKey(t)
		// A first lease on the connection, so that the second is the kind
		// most leases are: on a connection whose session is known.
		first, err := l.Lock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := first.Release(ctx); err != nil {
			t.Fatal(err)
		}
		lease, err := l.Lock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if !advisory.InterruptsBySocket(lease) {
			t.Fatal("the pgx lease has no socket: its release would be bounded by a context that pgx watches on every statement")
		}
		p.Blackhole()
		t0 := time.Now()
		err = lease.Release(ctx)
		took := time.Since(t0)
		t.Logf("Release on a silent network: %v after %v", err, took)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Release = %v, want an error wrapping context.DeadlineExceeded", err)
		}
		if max := bound + advisory.SweepPeriod(keepAlive) + time.Second; took < bound || took > max {
			t.Fatalf("Release took %v, want between %v and %v", took, bound, max)
		}
		if s := db.Stats(); s.InUse != 0 || s.Idle != 0 {
			t.Fatalf("pool after an interrupted Release: %+v, want the connection discarded", s)
		}
		// The partition heals the hard way: the server ends the session
		// when its socket closes, and the lock with it.
		p.Cut()
		p.Forward()
		testkit.WaitNoAdvisoryLocks(t, e.admin)
	})
}

// TestReleaseBackendGone: the holder's backend is terminated before Release
// (with a keepalive too slow to notice): Release reports the failure and the
// connection is discarded, not pooled.
func TestReleaseBackendGone(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		l := advisory.New(e.db, advisory.WithKeepAlive(time.Hour))
		ctx := timeout(t, 30*time.Second)
		key := testKey(t)
		lease, err := l.Lock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		e.terminate(t, lease.PID())
		waitFor(t, 10*time.Second, "backend gone", func() bool { return len(e.holders(t, key)) == 0 })
		err = lease.Release(ctx)
		if err == nil {
			t.Fatal("Release on a terminated backend succeeded")
		}
		t.Logf("Release after pg_terminate_backend: %v", err)
		if s := e.db.Stats(); s.InUse != 0 || s.OpenConnections != 0 {
			t.Fatalf("pool after a failed Release: %+v, want the connection discarded", s)
		}
		// The pool still works.
		again, err := l.Lock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := again.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// TestReleaseFalse: an unlock that reports false (the session no longer held
// the key) makes Release fail with ErrLockLost and discard the connection.
// No real server can be made to do this from outside, so the driver is
// go-sqlmock, answering the exact statements from sqltext.
func TestReleaseFalse(t *testing.T) {
	for _, unlock := range []struct {
		name string
		set  func(*sqlmock.ExpectedExec)
		want error
	}{
		{"false", func(e *sqlmock.ExpectedExec) { e.WillReturnResult(sqlmock.NewResult(0, 0)) }, advisory.ErrLockLost},
		{"error", func(e *sqlmock.ExpectedExec) { e.WillReturnError(driver.ErrBadConn) }, driver.ErrBadConn},
	} {
		t.Run(unlock.name, func(t *testing.T) {
			defer testkit.VerifyNone(t)
			db, mock, err := sqlmock.New(sqlmock.QueryMatcherOption(sqlmock.QueryMatcherEqual))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			key := keyspace.Int64(42)
			q, args := sqltext.Lock(sqltext.Params, sqltext.Mode{Try: true}, key, 0)
			mock.ExpectQuery(q).WithArgs(values(args)...).WillReturnRows(sqlmock.NewRows([]string{"ok", "pid"}).AddRow(true, 7))
			q, args = sqltext.Unlock(sqltext.Params, false, key)
			unlock.set(mock.ExpectExec(q).WithArgs(values(args)...))
			mock.ExpectClose()

			l := advisory.New(db, advisory.WithKeepAlive(time.Hour))
			ctx := timeout(t, 10*time.Second)
			lease, err := l.Lock(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if err := lease.Release(ctx); !errors.Is(err, unlock.want) {
				t.Fatalf("Release = %v, want %v", err, unlock.want)
			}
			if s := db.Stats(); s.OpenConnections != 0 {
				t.Fatalf("pool after Release: %+v, want the connection discarded", s)
			}
			if err := mock.ExpectationsWereMet(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func values(args []any) []driver.Value {
	out := make([]driver.Value, len(args))
	for i, a := range args {
		out[i] = a
	}
	return out
}

// TestPoolerSamePID: a second lease that lands on the backend of a live
// lease (only a pooler can do that) is refused with ErrPooler, after giving
// back what its acquire took; the first lease is unaffected.
func TestPoolerSamePID(t *testing.T) {
	defer testkit.VerifyNone(t)
	db, mock, err := sqlmock.New(sqlmock.QueryMatcherOption(sqlmock.QueryMatcherEqual))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a, b := keyspace.Int64(1), keyspace.Int64(2)
	for _, k := range []keyspace.Key{a, b} {
		q, args := sqltext.Lock(sqltext.Params, sqltext.Mode{Try: true}, k, 0)
		mock.ExpectQuery(q).WithArgs(values(args)...).WillReturnRows(sqlmock.NewRows([]string{"ok", "pid"}).AddRow(true, 7))
	}
	for _, k := range []keyspace.Key{b, a} {
		q, args := sqltext.Unlock(sqltext.Params, false, k)
		mock.ExpectExec(q).WithArgs(values(args)...).WillReturnResult(sqlmock.NewResult(0, 1))
	}
	l := advisory.New(db, advisory.WithKeepAlive(time.Hour))
	ctx := timeout(t, 10*time.Second)
	first, err := l.Lock(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Lock(ctx, b); !errors.Is(err, advisory.ErrPooler) {
		t.Fatalf("second lease on the same backend = %v, want ErrPooler", err)
	}
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

// TestReleaseManyPartly: a LockAll lease whose session no longer held one of
// its keys: the one-round-trip release reports ErrLockLost and discards the
// connection.
func TestReleaseManyPartly(t *testing.T) {
	defer testkit.VerifyNone(t)
	db, mock, err := sqlmock.New(sqlmock.QueryMatcherOption(sqlmock.QueryMatcherEqual))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keys := []keyspace.Key{keyspace.Int64(1), keyspace.Pair(1, 2)}
	q, args := sqltext.LockAll(sqltext.Params, sqltext.Mode{Try: true}, keys, 0)
	mock.ExpectQuery(q).WithArgs(values(args)...).WillReturnRows(sqlmock.NewRows([]string{"n", "pid"}).AddRow(int64(2), 7))
	q, args = sqltext.UnlockMany(sqltext.Params, false, keys)
	mock.ExpectQuery(q).WithArgs(values(args)...).WillReturnRows(sqlmock.NewRows([]string{"n"}).AddRow(int64(1)))
	mock.ExpectClose()
	l := advisory.New(db, advisory.WithKeepAlive(time.Hour))
	ctx := timeout(t, 10*time.Second)
	lease, err := l.LockAll(ctx, keys[1], keys[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := lease.Release(ctx); !errors.Is(err, advisory.ErrLockLost) {
		t.Fatalf("Release = %v, want ErrLockLost", err)
	}
	if s := db.Stats(); s.OpenConnections != 0 {
		t.Fatalf("pool after Release: %+v, want the connection discarded", s)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}
