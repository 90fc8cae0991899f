package mocktest_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/mocktest"
)

// TestSession drives the real advisory Locker against each session-lock
// expectation: acquire, then release.
func TestSession(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name    string
		opts    []mocktest.Option
		expect  func(m *mocktest.Mock)
		acquire func(l *advisory.Locker) (*advisory.Lease, error)
	}{
		{"Lock", nil, func(m *mocktest.Mock) {
			m.ExpectLock(keyA)
			m.ExpectUnlock(keyA, true)
		}, func(l *advisory.Locker) (*advisory.Lease, error) { return l.Lock(ctx, keyA) }},
		{"LockWithTimeout", []mocktest.Option{mocktest.WithLockTimeout(300 * time.Millisecond)}, func(m *mocktest.Mock) {
			m.ExpectLock(keyB)
			m.ExpectUnlock(keyB, true)
		}, func(l *advisory.Locker) (*advisory.Lease, error) { return l.Lock(ctx, keyB) }},
		{"LockShared", nil, func(m *mocktest.Mock) {
			m.ExpectLockShared(keyB)
			m.ExpectUnlockShared(keyB, true)
		}, func(l *advisory.Locker) (*advisory.Lease, error) { return l.LockShared(ctx, keyB) }},
		{"TryLock", nil, func(m *mocktest.Mock) {
			m.ExpectTryLock(keyC, true)
			m.ExpectUnlock(keyC, true)
		}, func(l *advisory.Locker) (*advisory.Lease, error) { return l.TryLock(ctx, keyC) }},
		{"TryLockShared", []mocktest.Option{mocktest.WithLockTimeout(time.Second)}, func(m *mocktest.Mock) {
			m.ExpectTryLockShared(keyC, true) // a try sends no lock_timeout
			m.ExpectUnlockShared(keyC, true)
		}, func(l *advisory.Locker) (*advisory.Lease, error) { return l.TryLockShared(ctx, keyC) }},
		{"LockAll", []mocktest.Option{mocktest.WithLockTimeout(time.Second)}, func(m *mocktest.Mock) {
			m.ExpectLockAll(keyA, keyB, keyC)
			m.ExpectUnlockAll(keyC, keyA, keyB)
		}, func(l *advisory.Locker) (*advisory.Lease, error) { return l.LockAll(ctx, keyB, keyC, keyA, keyA) }},
		{"LockAllOfOne", nil, func(m *mocktest.Mock) {
			m.ExpectLockAll(keyA, keyA)
			m.ExpectUnlockAll(keyA)
		}, func(l *advisory.Locker) (*advisory.Lease, error) { return l.LockAll(ctx, keyA) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, m := mocktest.New(t, c.opts...)
			c.expect(m)
			lease, err := c.acquire(m.Locker())
			if err != nil {
				t.Fatal(err)
			}
			if lease.PID() != m.PID() {
				t.Errorf("lease on backend %d; the mock answered %d", lease.PID(), m.PID())
			}
			if err := lease.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSessionTwoLeases: two leases at once get two backends, as on a server.
func TestSessionTwoLeases(t *testing.T) {
	ctx := context.Background()
	_, m := mocktest.New(t)
	m.ExpectLock(keyA)
	m.ExpectLock(keyB)
	m.ExpectUnlock(keyB, true)
	m.ExpectUnlock(keyA, true)
	l := m.Locker()
	a, err := l.Lock(ctx, keyA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Lock(ctx, keyB)
	if err != nil {
		t.Fatal(err)
	}
	if a.PID() == b.PID() {
		t.Errorf("both leases on backend %d", a.PID())
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSessionFailures: each failure mode comes out of advisory as the
// sentinel the real failure produces (see real_test.go for the server side).
func TestSessionFailures(t *testing.T) {
	ctx := context.Background()

	t.Run("TryLockRefused", func(t *testing.T) {
		_, m := mocktest.New(t)
		m.ExpectTryLock(keyA, false)
		m.ExpectTryLockShared(keyA, false)
		l := m.Locker()
		if _, err := l.TryLock(ctx, keyA); !errors.Is(err, advisory.ErrNotAcquired) {
			t.Fatalf("TryLock = %v; want ErrNotAcquired", err)
		}
		if _, err := l.TryLockShared(ctx, keyA); !errors.Is(err, advisory.ErrNotAcquired) {
			t.Fatalf("TryLockShared = %v; want ErrNotAcquired", err)
		}
	})

	t.Run("LockTimeout", func(t *testing.T) {
		_, m := mocktest.New(t, mocktest.WithLockTimeout(100*time.Millisecond))
		m.ExpectLockTimeout(keyA)
		m.ExpectLock(keyA) // the connection is fine: the next call works
		m.ExpectUnlock(keyA, true)
		l := m.Locker()
		if _, err := l.Lock(ctx, keyA); !errors.Is(err, advisory.ErrLockTimeout) {
			t.Fatalf("Lock = %v; want ErrLockTimeout", err)
		}
		lease, err := l.Lock(ctx, keyA)
		if err != nil {
			t.Fatal(err)
		}
		if err := lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("LockTimeoutPerExpectation", func(t *testing.T) {
		_, m := mocktest.New(t)
		m.ExpectLockTimeout(keyB, mocktest.WithLockTimeout(time.Second))
		l := m.Locker(advisory.WithLockTimeout(time.Second))
		if _, err := l.Lock(ctx, keyB); !errors.Is(err, advisory.ErrLockTimeout) {
			t.Fatalf("Lock = %v; want ErrLockTimeout", err)
		}
	})

	t.Run("LockConnLost", func(t *testing.T) {
		db, m := mocktest.New(t)
		m.ExpectLockConnLost(keyA)
		m.ExpectLock(keyA) // a new connection from the pool
		m.ExpectUnlock(keyA, true)
		l := m.Locker()
		_, err := l.Lock(ctx, keyA)
		if !errors.Is(err, driver.ErrBadConn) || pgerr.SQLState(err) != pgerr.AdminShutdown {
			t.Fatalf("Lock on a lost connection = %v; want driver.ErrBadConn with SQLSTATE 57P01", err)
		}
		lease, err := l.Lock(ctx, keyA)
		if err != nil {
			t.Fatalf("Lock after a lost connection: %v", err)
		}
		if err := lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if n := db.Stats().InUse; n != 0 {
			t.Errorf("%d connections in use", n)
		}
	})

	t.Run("UnlockFalse", func(t *testing.T) {
		db, m := mocktest.New(t)
		m.ExpectLock(keyA)
		m.ExpectUnlock(keyA, false)
		lease, err := m.Locker().Lock(ctx, keyA)
		if err != nil {
			t.Fatal(err)
		}
		if err := lease.Release(ctx); !errors.Is(err, advisory.ErrLockLost) {
			t.Fatalf("Release = %v; want ErrLockLost", err)
		}
		if n := db.Stats().InUse; n != 0 {
			t.Errorf("%d connections in use after a failed release", n)
		}
	})

	for _, c := range []struct {
		name   string
		expect func(m *mocktest.Mock)
		want   error
	}{
		{"KeepAliveLost", func(m *mocktest.Mock) { m.ExpectKeepAliveLost() }, advisory.ErrLockLost},
		{"KeepAlivePooler", func(m *mocktest.Mock) {
			m.ExpectKeepAlivePooler()
			m.ExpectUnlock(keyA, false) // advisory's release before the discard, on the backend the pooler gave
			m.ExpectEndIdleBackend()    // which was not the holder: the holder is ended if idle
		}, advisory.ErrPooler},
		{"KeepAlivePoolerHolderBusy", func(m *mocktest.Mock) {
			m.ExpectKeepAlivePooler()
			m.ExpectUnlock(keyA, false) // landed on another backend than the holder
			// The holder was in another client's transaction: not ended.
			m.ExpectQuery(sqltext.EndIdleBackend).WithArgs(int64(m.PID())).
				WillReturnRows(sqlmock.NewRows([]string{"done"}).AddRow(false))
			// The backend that answered the keepalive holds nothing.
			m.ExpectQuery(sqltext.EndIdleBackend).WithArgs(int64(m.PID() + 50000)).
				WillReturnRows(sqlmock.NewRows([]string{"done"}).AddRow(true))
			m.ExpectUnlock(keyA, true) // the next round's unlock reaches it
		}, advisory.ErrPooler},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, m := mocktest.New(t)
			m.ExpectLock(keyA)
			m.ExpectKeepAlive()
			m.ExpectKeepAlive()
			c.expect(m)
			lease, err := m.Locker(advisory.WithKeepAlive(10*time.Millisecond)).Lock(ctx, keyA)
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-lease.Lost():
			case <-time.After(20 * time.Second):
				t.Fatal("lease not lost")
			}
			if err := lease.Err(); !errors.Is(err, advisory.ErrLockLost) || !errors.Is(err, c.want) {
				t.Fatalf("Err = %v; want ErrLockLost and %v", err, c.want)
			}
			if err := lease.Release(ctx); !errors.Is(err, advisory.ErrLockLost) {
				t.Fatalf("Release of a lost lease = %v; want ErrLockLost", err)
			}
			// advisory cleans up after a loss in the background.
			deadline := time.Now().Add(10 * time.Second)
			for m.ExpectationsWereMet() != nil && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

// TestSessionDo drives advisory's Do, and a Do whose lock is lost while fn
// runs: fn's context is cancelled with ErrLockLost.
func TestSessionDo(t *testing.T) {
	ctx := context.Background()
	_, m := mocktest.New(t)
	m.ExpectLock(keyA)
	m.ExpectUnlock(keyA, true)
	ran := false
	if err := m.Locker().Do(ctx, keyA, func(context.Context) error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("Do = %v, ran %v", err, ran)
	}

	m.ExpectLock(keyB)
	m.ExpectKeepAliveLost()
	err := m.Locker(advisory.WithKeepAlive(10*time.Millisecond)).Do(ctx, keyB, func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(20 * time.Second):
			return errors.New("fn's context not cancelled")
		}
	})
	if !errors.Is(err, advisory.ErrLockLost) {
		t.Fatalf("Do = %v; want ErrLockLost", err)
	}
}

// TestSessionContendedHook: with Hooks.Contended a Locker tries first, as the
// package documentation says to expect.
func TestSessionContendedHook(t *testing.T) {
	ctx := context.Background()
	_, m := mocktest.New(t)
	contended := 0
	l := m.Locker(advisory.WithHooks(advisory.Hooks{Contended: func(keyspace.Key, bool) { contended++ }}))

	m.ExpectLock(keyA)
	m.ExpectUnlock(keyA, true)
	m.ExpectLockWaited(keyB)
	m.ExpectUnlock(keyB, true)
	for _, k := range []keyspace.Key{keyA, keyB} {
		lease, err := l.Lock(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if err := lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if contended != 1 {
		t.Errorf("Contended ran %d times; want 1", contended)
	}
}

// TestSessionTx drives Lease.Tx: a transaction on the holding connection.
func TestSessionTx(t *testing.T) {
	ctx := context.Background()
	_, m := mocktest.New(t)
	m.ExpectLock(keyA)
	m.ExpectBegin()
	m.ExpectExec("UPDATE jobs SET done = true").WillReturnResult(sqlmock.NewResult(0, 1))
	m.ExpectCommit()
	m.ExpectUnlock(keyA, true)
	lease, err := m.Locker().Lock(ctx, keyA)
	if err != nil {
		t.Fatal(err)
	}
	err = lease.Tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE jobs SET done = true")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
