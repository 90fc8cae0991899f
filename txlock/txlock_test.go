package txlock_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// lockCalls are the ways of taking key1 (and, for LockAll, key2) in tx.
var lockCalls = []struct {
	name   string
	shared bool
	lock   func(ctx context.Context, tx txlock.Querier, k1, k2 keyspace.Key) error
	all    bool
}{
	{"Lock", false, func(ctx context.Context, tx txlock.Querier, k1, _ keyspace.Key) error {
		return txlock.Lock(ctx, tx, k1)
	}, false},
	{"TryLock", false, func(ctx context.Context, tx txlock.Querier, k1, _ keyspace.Key) error {
		ok, err := txlock.TryLock(ctx, tx, k1)
		if err == nil && !ok {
			err = errors.New("TryLock on a free key: false")
		}
		return err
	}, false},
	{"LockShared", true, func(ctx context.Context, tx txlock.Querier, k1, _ keyspace.Key) error {
		return txlock.LockShared(ctx, tx, k1)
	}, false},
	{"TryLockShared", true, func(ctx context.Context, tx txlock.Querier, k1, _ keyspace.Key) error {
		ok, err := txlock.TryLockShared(ctx, tx, k1)
		if err == nil && !ok {
			err = errors.New("TryLockShared on a free key: false")
		}
		return err
	}, false},
	{"LockTimeout", false, func(ctx context.Context, tx txlock.Querier, k1, _ keyspace.Key) error {
		return txlock.Lock(ctx, tx, k1, txlock.WithLockTimeout(time.Second))
	}, false},
	{"LockAll", false, func(ctx context.Context, tx txlock.Querier, k1, k2 keyspace.Key) error {
		return txlock.LockAll(ctx, tx, k2, k1, k2)
	}, true},
	{"LockAllWithShared", true, func(ctx context.Context, tx txlock.Querier, k1, k2 keyspace.Key) error {
		return txlock.LockAllWith(ctx, tx, []txlock.Option{txlock.WithShared(), txlock.WithLockTimeout(time.Second)}, k2, k1)
	}, true},
	{"LockAllTimeout", false, func(ctx context.Context, tx txlock.Querier, k1, k2 keyspace.Key) error {
		return txlock.LockAllTimeout(ctx, tx, time.Second, k1, k2)
	}, true},
}

// TestHeldUntilEnd shows, from another session, that every lock call holds
// its keys from the moment it returns until COMMIT or ROLLBACK returns, and
// not after.
func TestHeldUntilEnd(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		db := itest.Open(t, driverName)
		ctx := ctxT(t)
		keys := [][2]keyspace.Key{
			{keyspace.Int64(-9223372036854775808), keyspace.Pair(2147483647, -1)},
			{keyspace.Hash("txlock:held"), keyspace.Int64(7)},
			{keyspace.Pair(-5, 5), keyspace.Pair(-5, 6)},
		}
		for _, kind := range txKinds {
			for _, call := range lockCalls {
				for i, end := range []string{"commit", "rollback"} {
					k1, k2 := keys[i%len(keys)][0], keys[i%len(keys)][1]
					t.Run(kind.name+"/"+call.name+"/"+end, func(t *testing.T) {
						held := []keyspace.Key{k1}
						if call.all {
							held = append(held, k2)
						}
						for _, k := range held {
							if !free(t, db, k, false) {
								t.Fatalf("%v held before the test", k)
							}
						}
						tx, err := kind.begin(ctx, db, driverName)
						if err != nil {
							t.Fatal(err)
						}
						if err := call.lock(ctx, tx, k1, k2); err != nil {
							_ = tx.Rollback()
							t.Fatal(err)
						}
						for _, k := range held {
							if free(t, db, k, false) {
								t.Errorf("%v: another session can take it exclusively while held", k)
							}
							if got := free(t, db, k, true); got != call.shared {
								t.Errorf("%v: another session can take it shared = %v, want %v", k, got, call.shared)
							}
						}
						// The transaction stays usable after the lock.
						if _, err := tx.ExecContext(ctx, "SELECT 1"); err != nil {
							t.Fatal(err)
						}
						if end == "commit" {
							err = tx.Commit()
						} else {
							err = tx.Rollback()
						}
						if err != nil {
							t.Fatal(err)
						}
						for _, k := range held {
							if !free(t, db, k, false) {
								t.Errorf("%v still held after %s returned", k, end)
							}
						}
					})
				}
			}
		}
		clean(t, db)
	})
}

// TestTryLockHeldElsewhere: a try answers false at once and leaves the
// transaction usable; Lock with WithTry returns ErrNotAcquired; shared tries
// succeed against shared holders only.
func TestTryLockHeldElsewhere(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		db := itest.Open(t, driverName)
		ctx := ctxT(t)
		key := keyspace.Pair(1, 2)
		release := holdElsewhere(t, db, key)
		for _, kind := range txKinds {
			t.Run(kind.name, func(t *testing.T) {
				tx, err := kind.begin(ctx, db, driverName)
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Rollback()
				start := time.Now()
				if ok, err := txlock.TryLock(ctx, tx, key); err != nil || ok {
					t.Fatalf("TryLock = %v, %v; want false, nil", ok, err)
				}
				if ok, err := txlock.TryLockShared(ctx, tx, key); err != nil || ok {
					t.Fatalf("TryLockShared = %v, %v; want false, nil", ok, err)
				}
				err = txlock.Lock(ctx, tx, key, txlock.WithTry())
				if !errors.Is(err, txlock.ErrNotAcquired) {
					t.Fatalf("Lock(WithTry) = %v; want ErrNotAcquired", err)
				}
				err = txlock.LockShared(ctx, tx, key, txlock.WithTry())
				if !errors.Is(err, txlock.ErrNotAcquired) {
					t.Fatalf("LockShared(WithTry) = %v; want ErrNotAcquired", err)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("tries took %v", d)
				}
				if _, err := tx.ExecContext(ctx, "SELECT 1"); err != nil {
					t.Fatalf("transaction unusable after a refused try: %v", err)
				}
			})
		}
		release()

		// Shared against shared.
		tx1, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx1.Rollback()
		if err := txlock.LockShared(ctx, tx1, key); err != nil {
			t.Fatal(err)
		}
		tx2, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx2.Rollback()
		if ok, err := txlock.TryLockShared(ctx, tx2, key); err != nil || !ok {
			t.Fatalf("TryLockShared beside a shared holder = %v, %v; want true", ok, err)
		}
		if ok, err := txlock.TryLock(ctx, tx2, keyspace.Pair(1, 3)); err != nil || !ok {
			t.Fatalf("TryLock on a free key = %v, %v; want true", ok, err)
		}
		tx1.Rollback()
		tx2.Rollback()
		clean(t, db)
	})
}

// TestLockWaitsAndContext: Lock waits for the holder to finish, and a wait
// ends with the caller's context.
func TestLockWaitsAndContext(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		db := itest.Open(t, driverName)
		ctx := ctxT(t)
		key := keyspace.Int64(99)
		release := holdElsewhere(t, db, key)

		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() { got <- txlock.Lock(ctx, tx, key) }()
		waitWaiting(t, db, 1)
		select {
		case err := <-got:
			t.Fatalf("Lock returned while the key was held elsewhere: %v", err)
		default:
		}
		release()
		if err := <-got; err != nil {
			t.Fatalf("Lock after the holder ended: %v", err)
		}
		if free(t, db, key, false) {
			t.Fatal("key free after Lock returned")
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}

		// A wait that the context ends.
		release = holdElsewhere(t, db, key)
		tx, err = db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err = txlock.Lock(short, tx, key)
		elapsed := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock with a 200ms context = %v; want DeadlineExceeded", err)
		}
		if elapsed > 10*time.Second {
			t.Fatalf("cancelled wait returned after %v", elapsed)
		}
		t.Logf("%s: cancelled wait returned after %v", driverName, elapsed)
		_ = tx.Rollback()
		release()
		clean(t, db)
	})
}

// TestLockTimeout: WithLockTimeout and LockAllTimeout end the wait with
// ErrLockTimeout (the same value as pgerr's, which advisory re-exports), and a
// timed lock that succeeds puts the transaction's own lock_timeout back.
func TestLockTimeout(t *testing.T) {
	if txlock.ErrLockTimeout != pgerr.ErrLockTimeout || txlock.ErrOutOfLockMemory != pgerr.ErrOutOfLockMemory {
		t.Fatal("txlock's sentinels are not pgerr's")
	}
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		db := itest.Open(t, driverName)
		ctx := ctxT(t)
		key, other := keyspace.Hash("txlock:timeout"), keyspace.Pair(3, 4)
		for _, kind := range txKinds {
			t.Run(kind.name, func(t *testing.T) {
				release := holdElsewhere(t, db, key)
				defer release()
				calls := map[string]func(tx txlock.Querier) error{
					"Lock": func(tx txlock.Querier) error {
						return txlock.Lock(ctx, tx, key, txlock.WithLockTimeout(100*time.Millisecond))
					},
					"LockShared": func(tx txlock.Querier) error {
						return txlock.LockShared(ctx, tx, key, txlock.WithLockTimeout(100*time.Millisecond))
					},
					"LockAllTimeout": func(tx txlock.Querier) error {
						return txlock.LockAllTimeout(ctx, tx, 100*time.Millisecond, other, key)
					},
				}
				for name, call := range calls {
					tx, err := kind.begin(ctx, db, driverName)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := tx.ExecContext(ctx, "SET LOCAL lock_timeout = '7s'"); err != nil {
						t.Fatal(err)
					}
					start := time.Now()
					err = call(tx)
					elapsed := time.Since(start)
					_ = tx.Rollback()
					if !errors.Is(err, txlock.ErrLockTimeout) {
						t.Fatalf("%s on a held key with a 100ms timeout = %v; want ErrLockTimeout", name, err)
					}
					if pgerr.SQLState(err) != pgerr.LockNotAvailable {
						t.Errorf("%s: the driver's error is not reachable: SQLSTATE %q", name, pgerr.SQLState(err))
					}
					if elapsed < 90*time.Millisecond || elapsed > 5*time.Second {
						t.Errorf("%s: timed out after %v; want about 100ms", name, elapsed)
					}
					t.Logf("%s %s: ErrLockTimeout after %v", driverName, name, elapsed)
				}
				release()

				// Success: the transaction's own setting is back.
				for name, call := range calls {
					tx, err := kind.begin(ctx, db, driverName)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := tx.ExecContext(ctx, "SET LOCAL lock_timeout = '7s'"); err != nil {
						t.Fatal(err)
					}
					if err := call(tx); err != nil {
						t.Fatalf("%s on a free key: %v", name, err)
					}
					if got := showLockTimeout(t, tx); got != "7s" {
						t.Errorf("%s: lock_timeout after a timed lock = %q; want the transaction's own 7s", name, got)
					}
					if err := tx.Commit(); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
		// Without SET LOCAL the session default (0) comes back too.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := txlock.Lock(ctx, tx, key, txlock.WithLockTimeout(time.Second)); err != nil {
			t.Fatal(err)
		}
		if got := showLockTimeout(t, tx); got != "0" {
			t.Errorf("lock_timeout after a timed lock = %q; want 0", got)
		}
		_ = tx.Rollback()
		clean(t, db)
	})
}

// TestRejectsNonTransaction: values that run each statement in a transaction
// of their own are refused before any connection is even opened.
func TestRejectsNonTransaction(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		dsn := itest.DSN(t)
		db, err := sql.Open(driverName, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		ctx := ctxT(t)
		conn, err := db.Conn(ctx) // opens the one connection this test uses
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		opened := db.Stats().OpenConnections
		for name, q := range nonTransactions(db, conn, driverName) {
			checkRejected(t, name, q)
		}
		if got := db.Stats().OpenConnections; got != opened {
			t.Errorf("open connections went from %d to %d: something was sent", opened, got)
		}
		// The one connection we hold ran nothing either: its backend's last
		// statement is still none, seen from another session.
		mon := itest.OpenDSN(t, driverName, dsn)
		var n int
		if err := mon.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE '%advisory%' AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d sessions ran an advisory lock statement", n)
		}
	})
}

// TestBadArguments: nil transactions, typed nil transactions and empty key
// lists are clear errors, not panics.
func TestBadArguments(t *testing.T) {
	ctx := ctxT(t)
	var nilTx *sql.Tx
	for name, q := range map[string]txlock.Querier{"nil": nil, "typed nil *sql.Tx": nilTx} {
		checkRejected(t, name, q)
	}
	if err := txlock.LockAll(ctx, nil); !errors.Is(err, txlock.ErrNotTransaction) {
		t.Errorf("LockAll(nil tx, no keys) = %v; want ErrNotTransaction first", err)
	}
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		db := itest.Open(t, driverName)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if err := txlock.LockAll(ctx, tx); !errors.Is(err, txlock.ErrNoKeys) {
			t.Errorf("LockAll without keys = %v; want ErrNoKeys", err)
		}
		if err := txlock.LockAll(ctx, tx, []keyspace.Key(nil)...); !errors.Is(err, txlock.ErrNoKeys) {
			t.Errorf("LockAll(nil...) = %v; want ErrNoKeys", err)
		}
		for _, o := range []txlock.Option{txlock.WithTry(), txlock.WithTxOptions(&sql.TxOptions{})} {
			if err := txlock.LockAllWith(ctx, tx, []txlock.Option{o}, keyspace.Int64(1)); err == nil {
				t.Error("LockAllWith accepted an option that does not apply")
			}
		}
		if err := txlock.Do(ctx, db, keyspace.Int64(1), nil); err == nil {
			t.Error("Do with a nil function: no error")
		}
		var nilDB *sql.DB
		if err := txlock.Do(ctx, nilDB, keyspace.Int64(1), func(*sql.Tx) error { return nil }); err == nil {
			t.Error("Do with a nil *sql.DB: no error")
		}
		tx.Rollback()
		clean(t, db)
	})
}

func TestSorted(t *testing.T) {
	in := []keyspace.Key{keyspace.Pair(1, 2), keyspace.Int64(5), keyspace.Pair(-1, 0), keyspace.Int64(-5), keyspace.Int64(5)}
	got := txlock.Sorted(in)
	want := []keyspace.Key{keyspace.Int64(-5), keyspace.Int64(5), keyspace.Pair(-1, 0), keyspace.Pair(1, 2)}
	if len(got) != len(want) {
		t.Fatalf("Sorted = %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Sorted = %v; want %v", got, want)
		}
	}
	if in[0] != keyspace.Pair(1, 2) {
		t.Error("Sorted changed its argument")
	}
}
