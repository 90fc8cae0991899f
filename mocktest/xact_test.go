package mocktest_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"

	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/mocktest"
	"github.com/pgadvisory/pgadvisory/txlock"
)

func TestMain(m *testing.M) { testkit.Main(m) }

var (
	keyA = keyspace.Hash("mocktest:a")
	keyB = keyspace.Pair(7, -7)
	keyC = keyspace.Int64(-42)
)

// inTx runs fn in a transaction of db that the mock expects to begin and to
// end as end says ("commit" or "rollback").
func inTx(t *testing.T, db *sql.DB, m *mocktest.Mock, end string, expect func(), fn func(tx *sql.Tx) error) error {
	t.Helper()
	m.ExpectBegin()
	expect()
	if end == "commit" {
		m.ExpectCommit()
	} else {
		m.ExpectRollback()
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	ferr := fn(tx)
	if end == "commit" {
		err = tx.Commit()
	} else {
		err = tx.Rollback()
	}
	if err != nil {
		t.Fatalf("%s: %v", end, err)
	}
	return ferr
}

// TestXact drives the real txlock functions against each transaction-lock
// expectation.
func TestXact(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		expect func(m *mocktest.Mock)
		call   func(tx *sql.Tx) error
	}{
		{"Lock", func(m *mocktest.Mock) { m.ExpectXactLock(keyA) }, func(tx *sql.Tx) error {
			return txlock.Lock(ctx, tx, keyA)
		}},
		{"LockTimeout", func(m *mocktest.Mock) { m.ExpectXactLock(keyA, mocktest.WithLockTimeout(250*time.Millisecond)) }, func(tx *sql.Tx) error {
			return txlock.Lock(ctx, tx, keyA, txlock.WithLockTimeout(250*time.Millisecond))
		}},
		{"LockShared", func(m *mocktest.Mock) { m.ExpectXactLockShared(keyB) }, func(tx *sql.Tx) error {
			return txlock.LockShared(ctx, tx, keyB)
		}},
		{"LockSharedTimeout", func(m *mocktest.Mock) { m.ExpectXactLockShared(keyB, mocktest.WithLockTimeout(time.Second)) }, func(tx *sql.Tx) error {
			return txlock.LockShared(ctx, tx, keyB, txlock.WithLockTimeout(time.Second))
		}},
		{"TryLock", func(m *mocktest.Mock) { m.ExpectXactTryLock(keyA, true) }, func(tx *sql.Tx) error {
			return wantTry(txlock.TryLock(ctx, tx, keyA, txlock.WithLockTimeout(time.Second)))(true)
		}},
		{"TryLockRefused", func(m *mocktest.Mock) { m.ExpectXactTryLock(keyA, false) }, func(tx *sql.Tx) error {
			return wantTry(txlock.TryLock(ctx, tx, keyA))(false)
		}},
		{"TryLockShared", func(m *mocktest.Mock) { m.ExpectXactTryLockShared(keyC, true) }, func(tx *sql.Tx) error {
			return wantTry(txlock.TryLockShared(ctx, tx, keyC))(true)
		}},
		{"TryLockSharedRefused", func(m *mocktest.Mock) { m.ExpectXactTryLockShared(keyC, false) }, func(tx *sql.Tx) error {
			return wantTry(txlock.TryLockShared(ctx, tx, keyC))(false)
		}},
		{"LockWithTryRefused", func(m *mocktest.Mock) { m.ExpectXactTryLock(keyA, false) }, func(tx *sql.Tx) error {
			if err := txlock.Lock(ctx, tx, keyA, txlock.WithTry()); !errors.Is(err, txlock.ErrNotAcquired) {
				return errors.New("Lock(WithTry) refused: want ErrNotAcquired, got " + errString(err))
			}
			return nil
		}},
		{"LockAll", func(m *mocktest.Mock) { m.ExpectXactLockAll(keyA, keyB, keyC) }, func(tx *sql.Tx) error {
			return txlock.LockAll(ctx, tx, keyC, keyB, keyA, keyB) // any order, duplicates
		}},
		{"LockAllTimeout", func(m *mocktest.Mock) { m.ExpectXactLockAllTimeout(time.Second, keyB, keyA) }, func(tx *sql.Tx) error {
			return txlock.LockAllTimeout(ctx, tx, time.Second, keyA, keyB)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, m := mocktest.New(t)
			if err := inTx(t, db, m, "commit", func() { c.expect(m) }, c.call); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestXactFailures: the failure modes come out of txlock as the sentinels a
// real server's failures do.
func TestXactFailures(t *testing.T) {
	ctx := context.Background()
	t.Run("LockTimeout", func(t *testing.T) {
		db, m := mocktest.New(t)
		err := inTx(t, db, m, "rollback", func() {
			m.ExpectXactLockTimeout(keyA, mocktest.WithLockTimeout(100*time.Millisecond))
		}, func(tx *sql.Tx) error {
			return txlock.Lock(ctx, tx, keyA, txlock.WithLockTimeout(100*time.Millisecond))
		})
		if !errors.Is(err, txlock.ErrLockTimeout) {
			t.Fatalf("Lock = %v; want ErrLockTimeout", err)
		}
	})
	t.Run("ConnLost", func(t *testing.T) {
		db, m := mocktest.New(t)
		m.ExpectBegin()
		m.ExpectXactLockConnLost(keyA)
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		err = txlock.Lock(ctx, tx, keyA)
		if !errors.Is(err, driver.ErrBadConn) {
			t.Fatalf("Lock = %v; want the lost connection", err)
		}
		_ = tx.Rollback() // the connection is gone: nothing is sent
	})
}

// TestXactDo drives txlock.Do: commit on success, rollback on error.
func TestXactDo(t *testing.T) {
	ctx := context.Background()
	db, m := mocktest.New(t)
	m.ExpectBegin()
	m.ExpectXactLock(keyA)
	m.ExpectExec("UPDATE invoices SET paid = true WHERE id = $1").WithArgs(42).WillReturnResult(sqlmock.NewResult(0, 1))
	m.ExpectCommit()
	err := txlock.Do(ctx, db, keyA, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE invoices SET paid = true WHERE id = $1", 42)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	errBoom := errors.New("boom")
	m.ExpectBegin()
	m.ExpectXactTryLock(keyB, true)
	m.ExpectRollback()
	if err := txlock.Do(ctx, db, keyB, func(*sql.Tx) error { return errBoom }, txlock.WithTry()); err != errBoom {
		t.Fatalf("Do = %v; want fn's error", err)
	}

	m.ExpectBegin()
	m.ExpectXactLockTimeout(keyC, mocktest.WithLockTimeout(time.Second))
	m.ExpectRollback()
	err = txlock.Do(ctx, db, keyC, func(*sql.Tx) error { t.Error("fn ran"); return nil }, txlock.WithLockTimeout(time.Second))
	if !errors.Is(err, txlock.ErrLockTimeout) {
		t.Fatalf("Do = %v; want ErrLockTimeout", err)
	}
}

func wantTry(ok bool, err error) func(want bool) error {
	return func(want bool) error {
		if err != nil {
			return err
		}
		if ok != want {
			return errors.New("try answered the opposite of the expectation")
		}
		return nil
	}
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}
