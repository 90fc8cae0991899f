package txlock_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// exampleTB lets an Example use itest's test helpers: a failure panics (an
// Example cannot be skipped) and cleanups run when the example is done.
type exampleTB struct {
	testing.TB // nil: only the methods below are called
	cleanups   []func()
}

func (e *exampleTB) Helper()                   {}
func (e *exampleTB) Name() string              { return "Example" }
func (e *exampleTB) Cleanup(f func())          { e.cleanups = append(e.cleanups, f) }
func (e *exampleTB) Logf(string, ...any)       {}
func (e *exampleTB) Errorf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (e *exampleTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (e *exampleTB) Skipf(f string, a ...any)  { panic(fmt.Sprintf(f, a...)) }
func (e *exampleTB) done() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
}

// exampleDB opens a fresh database on the test binary's PostgreSQL (see
// itest) and returns it with the function that drops it.
func exampleDB() (*sql.DB, func()) {
	tb := &exampleTB{}
	db := itest.Open(tb, "pgx")
	if _, err := db.Exec("CREATE TABLE invoices (id int PRIMARY KEY, paid bool NOT NULL DEFAULT false)"); err != nil {
		panic(err)
	}
	if _, err := db.Exec("INSERT INTO invoices (id) VALUES (42)"); err != nil {
		panic(err)
	}
	return db, tb.done
}

// Do runs a unit of work under a transaction lock: every process that pays
// invoice 42 through Do does so one at a time.
func ExampleDo() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()

	key := keyspace.Hash("invoice:42")
	err := txlock.Do(ctx, db, key, func(tx *sql.Tx) error {
		var paid bool
		if err := tx.QueryRowContext(ctx, "SELECT paid FROM invoices WHERE id = 42").Scan(&paid); err != nil {
			return err
		}
		if paid {
			return errors.New("already paid")
		}
		_, err := tx.ExecContext(ctx, "UPDATE invoices SET paid = true WHERE id = 42")
		return err
	})
	fmt.Println("first payment:", err)

	err = txlock.Do(ctx, db, key, func(tx *sql.Tx) error {
		var paid bool
		if err := tx.QueryRowContext(ctx, "SELECT paid FROM invoices WHERE id = 42").Scan(&paid); err != nil {
			return err
		}
		if paid {
			return errors.New("already paid")
		}
		return nil
	})
	fmt.Println("second payment:", err)
	// Output:
	// first payment: <nil>
	// second payment: already paid
}

// Lock inside a transaction of your own, with the wait bounded.
func ExampleLock() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()
	key := keyspace.Hash("invoice:42")

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	defer tx.Rollback()
	if err := txlock.Lock(ctx, tx, key, txlock.WithLockTimeout(2*time.Second)); err != nil {
		panic(err)
	}

	// Another transaction waits at most 100ms for the same key.
	other, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	defer other.Rollback()
	err = txlock.Lock(ctx, other, key, txlock.WithLockTimeout(100*time.Millisecond))
	fmt.Println("other transaction timed out:", errors.Is(err, txlock.ErrLockTimeout))

	// COMMIT (or ROLLBACK) releases the lock.
	if err := tx.Commit(); err != nil {
		panic(err)
	}
	third, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	defer third.Rollback()
	ok, err := txlock.TryLock(ctx, third, key)
	fmt.Println("free after commit:", ok, err)
	// Output:
	// other transaction timed out: true
	// free after commit: true <nil>
}

// TryLock answers at once; a false result leaves the transaction usable.
func ExampleTryLock() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()
	key := keyspace.MustNamespace("reports", 7).ID(2026)

	holder, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	defer holder.Rollback()
	ok, _ := txlock.TryLock(ctx, holder, key)
	fmt.Println("holder:", ok)

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	defer tx.Rollback()
	ok, _ = txlock.TryLock(ctx, tx, key)
	fmt.Println("second:", ok)
	// Output:
	// holder: true
	// second: false
}

// LockAll takes several keys in one statement, in a fixed order, so two
// transfers between the same accounts cannot deadlock whichever way they go.
func ExampleLockAll() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()
	accounts := keyspace.MustNamespace("accounts", 8)

	transfer := func(from, to int32) error {
		return txlock.Do(ctx, db, accounts.ID(from), func(tx *sql.Tx) error {
			return txlock.LockAll(ctx, tx, accounts.ID(from), accounts.ID(to))
			// ... move the money here, holding both accounts ...
		})
	}
	fmt.Println(transfer(1, 2), transfer(2, 1))
	// Output: <nil> <nil>
}
