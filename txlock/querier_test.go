package txlock_test

import (
	"errors"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// queryOnly is a transaction seen through nothing but QueryRowContext: txlock
// then sends its single-key locks as queries (the Query form) instead of
// with Exec.
type queryOnly struct{ txlock.Querier }

// TestQuerierWithoutExec: through a Querier without ExecContext, the locks
// behave as through a *sql.Tx: held until the transaction ends, a try
// refused while another transaction holds the key, and a lock_timeout that
// ends a wait with ErrLockTimeout.
func TestQuerierWithoutExec(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		db := itest.Open(t, driverName)
		ctx := ctxT(t)
		key := keyspace.Pair(41, 7)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		q := queryOnly{tx}
		if err := txlock.Lock(ctx, q, key); err != nil {
			t.Fatal(err)
		}
		if free(t, db, key, false) {
			t.Fatal("key free while the transaction holds it")
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if !free(t, db, key, false) {
			t.Fatal("key still held after COMMIT")
		}

		release := holdElsewhere(t, db, key)
		tx, err = db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		q = queryOnly{tx}
		if ok, err := txlock.TryLock(ctx, q, key); err != nil || ok {
			t.Fatalf("TryLock of a key held elsewhere = %v, %v; want false", ok, err)
		}
		if err := txlock.Lock(ctx, q, key, txlock.WithLockTimeout(50*time.Millisecond)); !errors.Is(err, txlock.ErrLockTimeout) {
			t.Fatalf("Lock with lock_timeout = %v, want ErrLockTimeout", err)
		}
		_ = tx.Rollback()
		release()
	})
}
