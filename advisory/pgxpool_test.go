package advisory_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// TestPgxPool: a *sql.DB over a pgxpool (stdlib.OpenDBFromPool), whose
// driver connections go back to the pgxpool when database/sql closes them.
// A connection that advisory discards must still end its session, and with
// it every lock it holds: here a LockAll that took its first key and then
// ran into lock_timeout on the second must leave neither held.
func TestPgxPool(t *testing.T) {
	e := setup(t, "pgx")
	ctx := timeout(t, 30*time.Second)
	pool, err := pgxpool.New(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { db.Close() })

	keys := []keyspace.Key{testKey(t), testKey(t)}
	slices.SortFunc(keys, keyspace.Compare)
	first, second := keys[0], keys[1]
	other, err := e.admin.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.ExecContext(ctx, `SELECT pg_advisory_lock($1::int8)`, bigint(second)); err != nil {
		t.Fatal(err)
	}

	l := advisory.New(db, advisory.WithLockTimeout(200*time.Millisecond))
	if _, err := l.LockAll(ctx, first, second); !errors.Is(err, advisory.ErrLockTimeout) {
		t.Fatalf("LockAll with the second key held elsewhere = %v, want ErrLockTimeout", err)
	}
	waitFor(t, 5*time.Second, "the first key to be free after the failed LockAll", func() bool {
		return len(e.holders(t, first)) == 0
	})

	// A lease whose connection is discarded on loss: terminated, it ends;
	// the pool's other connections are unaffected, and locks work on.
	lease, err := l.Lock(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := other.ExecContext(ctx, `SELECT pg_advisory_unlock($1::int8)`, bigint(second)); err != nil {
		t.Fatal(err)
	}
	lease, err = l.LockAll(ctx, first, second)
	if err != nil {
		t.Fatal(err)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
