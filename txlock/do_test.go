package txlock_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// TestDo: success commits, an error rolls back and comes back as it is, a
// panic rolls back and panics again; the key is held while fn runs and free
// once Do has returned, in every case and through every kind of Beginner.
func TestDo(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		db := itest.Open(t, driverName)
		ctx := ctxT(t)
		if _, err := db.ExecContext(ctx, "CREATE TABLE work (id int)"); err != nil {
			t.Fatal(err)
		}
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		beginners := map[string]txlock.Beginner{"*sql.DB": db, "*sqlx.DB": sqlx.NewDb(db, driverName), "*sql.Conn": conn}
		errBoom := errors.New("boom")
		id := 0
		for name, b := range beginners {
			for _, outcome := range []string{"commit", "error", "panic"} {
				t.Run(name+"/"+outcome, func(t *testing.T) {
					id++
					key := keyspace.Pair(42, int32(id))
					ran := false
					var panicked any
					err := func() (err error) {
						defer func() { panicked = recover() }()
						return txlock.Do(ctx, b, key, func(tx *sql.Tx) error {
							ran = true
							if free(t, db, key, false) || free(t, db, key, true) {
								t.Error("key not held while fn runs")
							}
							if _, err := tx.ExecContext(ctx, "INSERT INTO work VALUES ($1)", id); err != nil {
								return err
							}
							switch outcome {
							case "error":
								return errBoom
							case "panic":
								panic(errBoom)
							}
							return nil
						})
					}()
					if !ran {
						t.Fatal("fn did not run")
					}
					switch outcome {
					case "commit":
						if err != nil || panicked != nil {
							t.Fatalf("Do = %v, panic %v; want nil", err, panicked)
						}
					case "error":
						if err != errBoom || panicked != nil {
							t.Fatalf("Do = %v, panic %v; want fn's error itself", err, panicked)
						}
					case "panic":
						if panicked != errBoom || err != nil {
							t.Fatalf("Do = %v, panic %v; want the same panic again", err, panicked)
						}
					}
					var n int
					if err := db.QueryRowContext(ctx, "SELECT count(*) FROM work WHERE id = $1", id).Scan(&n); err != nil {
						t.Fatal(err)
					}
					if want := map[string]int{"commit": 1}[outcome]; n != want {
						t.Errorf("%d rows written; want %d", n, want)
					}
					if !free(t, db, key, false) {
						t.Error("key still held after Do returned")
					}
				})
			}
		}
		conn.Close()
		clean(t, db)
	})
}

// TestDoOptions: WithTry, WithLockTimeout, WithShared and WithTxOptions.
func TestDoOptions(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		db := itest.Open(t, driverName)
		ctx := ctxT(t)
		key := keyspace.Hash("txlock:do-options")
		never := func(*sql.Tx) error { t.Error("fn ran without the lock"); return nil }

		release := holdElsewhere(t, db, key)
		start := time.Now()
		if err := txlock.Do(ctx, db, key, never, txlock.WithTry()); !errors.Is(err, txlock.ErrNotAcquired) {
			t.Errorf("Do(WithTry) on a held key = %v; want ErrNotAcquired", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Do(WithTry) took %v", d)
		}
		start = time.Now()
		if err := txlock.Do(ctx, db, key, never, txlock.WithLockTimeout(100*time.Millisecond)); !errors.Is(err, txlock.ErrLockTimeout) {
			t.Errorf("Do(WithLockTimeout) on a held key = %v; want ErrLockTimeout", err)
		}
		t.Logf("%s: Do(WithLockTimeout(100ms)) on a held key returned after %v", driverName, time.Since(start))
		release()

		err := txlock.Do(ctx, db, key, func(tx *sql.Tx) error {
			if !free(t, db, key, true) || free(t, db, key, false) {
				t.Error("WithShared: not held in shared mode")
			}
			_, err := tx.ExecContext(ctx, "CREATE TABLE nope (id int)")
			return err
		}, txlock.WithShared(), txlock.WithTxOptions(&sql.TxOptions{ReadOnly: true}))
		if err == nil {
			t.Error("a write inside a read-only Do succeeded")
		}
		// A cancelled context: nothing runs, the error says why.
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if err := txlock.Do(cancelled, db, key, never); !errors.Is(err, context.Canceled) {
			t.Errorf("Do with a cancelled context = %v; want context.Canceled", err)
		}
		// The context ends while fn runs: database/sql rolls back, and Do
		// says why instead of reporting a bare failed commit.
		cctx, ccancel := context.WithCancel(ctx)
		err = txlock.Do(cctx, db, key, func(*sql.Tx) error { ccancel(); return nil })
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Do whose context ended during fn = %v; want context.Canceled", err)
		}
		if !free(t, db, key, false) {
			t.Error("key held after Do returned")
		}
		// The context ends during the lock wait.
		release = holdElsewhere(t, db, key)
		wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		start = time.Now()
		err = txlock.Do(wctx, db, key, never)
		wcancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Do whose context ended during the wait = %v; want DeadlineExceeded", err)
		}
		t.Logf("%s: Do with a 200ms context on a held key returned after %v", driverName, time.Since(start))
		release()
		clean(t, db)
	})
}
