package advisory_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// exampleDB gives an example a fresh database on the test server (the one in
// PGADVISORY_TEST_DSN, else one that itest starts for the example) and a
// function that removes it. In your code, db is your application's *sql.DB.
func exampleDB() (*sql.DB, func()) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv, err := itest.Start(ctx, itest.Config{})
	if err != nil {
		panic(err)
	}
	admin, err := sql.Open("pgx", srv.DSN(""))
	if err != nil {
		panic(err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "example_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		panic(err)
	}
	db, err := sql.Open("pgx", srv.DSN(name))
	if err != nil {
		panic(err)
	}
	return db, func() {
		db.Close()
		_, _ = admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		admin.Close()
		srv.Close()
	}
}

func ExampleLocker_Lock() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()

	l := advisory.New(db)
	lease, err := l.Lock(ctx, keyspace.Hash("daily-report-job"))
	if err != nil {
		fmt.Println("lock:", err)
		return
	}
	// Release even if ctx is cancelled by then: it runs without ctx's
	// cancellation, with its own short timeout.
	defer lease.Release(ctx)

	fmt.Println("holding", lease.Key())
	// Output: holding 2900925584919938136
}

func ExampleLocker_TryLock() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()

	l := advisory.New(db)
	key := keyspace.MustNamespace("orders", 7).ID(123)
	first, err := l.TryLock(ctx, key)
	if err != nil {
		fmt.Println("first:", err)
		return
	}
	defer first.Release(ctx)

	// Another session (here: another connection of the same pool) is refused.
	_, err = l.TryLock(ctx, key)
	fmt.Println("second try refused:", errors.Is(err, advisory.ErrNotAcquired))
	// Output: second try refused: true
}

func ExampleLocker_Do() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()

	l := advisory.New(db, advisory.WithKeepAlive(time.Second), advisory.WithLockTimeout(10*time.Second))
	err := l.Do(ctx, keyspace.Hash("payment:order-123"), func(ctx context.Context) error {
		// ctx is cancelled, with ErrLockLost as its cause, if the lock is lost.
		lease, _ := advisory.LeaseFromContext(ctx)
		fmt.Println("charging the order under", lease.Key())
		return nil
	})
	if errors.Is(err, advisory.ErrLockLost) {
		fmt.Println("lost the lock: the work may have overlapped with another holder")
	}
	fmt.Println("err:", err)
	// Output:
	// charging the order under 4312917370057361399
	// err: <nil>
}

func ExampleLocker_LockAll() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()

	l := advisory.New(db)
	// Any order: LockAll sorts, so two transfers between the same accounts
	// cannot deadlock each other.
	lease, err := l.LockAll(ctx, keyspace.Pair(1, 42), keyspace.Pair(1, 17))
	if err != nil {
		fmt.Println("lock:", err)
		return
	}
	defer lease.Release(ctx)
	fmt.Println("holding", lease.Keys())
	// Output: holding [(1,17) (1,42)]
}

func ExampleLease_Tx() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE TABLE reports (day date PRIMARY KEY)"); err != nil {
		fmt.Println(err)
		return
	}
	if err := advisory.CreateFenceTable(ctx, db, ""); err != nil {
		fmt.Println(err)
		return
	}

	l := advisory.New(db, advisory.WithFencing(""))
	lease, err := l.Lock(ctx, keyspace.Hash("daily-report-job"))
	if err != nil {
		fmt.Println("lock:", err)
		return
	}
	defer lease.Release(ctx)

	// A write to this database, fenced by running on the holding session:
	// if the lock was lost it fails with ErrLockLost instead of committing.
	err = lease.Tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO reports VALUES ('2026-11-25')")
		return err
	})
	fmt.Println("write:", err)
	// A write elsewhere carries the token; that store rejects lower ones.
	// Only the order of tokens means something: a token is epoch<<40 |
	// counter, here the first of epoch 1 (the first server lifetime that
	// the table saw); the counter counts the draws of all keys.
	fmt.Println("token:", lease.Token(), "epoch:", lease.Token()>>40, "counter:", lease.Token()&(1<<40-1))
	// Output:
	// write: <nil>
	// token: 1099511627777 epoch: 1 counter: 1
}
