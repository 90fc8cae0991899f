package txlock_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// The types txlock documents as accepted, pinned.
var (
	_ txlock.Querier  = (*sql.Tx)(nil)
	_ txlock.Querier  = (*sqlx.Tx)(nil)
	_ txlock.Beginner = (*sql.DB)(nil)
	_ txlock.Beginner = (*sql.Conn)(nil)
	_ txlock.Beginner = (*sqlx.DB)(nil)
)

// styledTx is a *sql.Tx that also tells its driver, so txlock writes keys in
// the driver's own style (integer literals for lib/pq).
type styledTx struct {
	*sql.Tx
	drv driver.Driver
}

func (s styledTx) Driver() driver.Driver { return s.drv }

// openTx is a transaction in one of the forms txlock accepts.
type openTx interface {
	txlock.Querier
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	Commit() error
	Rollback() error
}

// txKinds are the transaction forms every hold test runs with.
var txKinds = []struct {
	name  string
	begin func(ctx context.Context, db *sql.DB, driverName string) (openTx, error)
}{
	{"sql.Tx", func(ctx context.Context, db *sql.DB, _ string) (openTx, error) {
		return db.BeginTx(ctx, nil)
	}},
	{"sqlx.Tx", func(ctx context.Context, db *sql.DB, driverName string) (openTx, error) {
		return sqlx.NewDb(db, driverName).BeginTxx(ctx, nil)
	}},
	{"styled", func(ctx context.Context, db *sql.DB, _ string) (openTx, error) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		return styledTx{tx, db.Driver()}, nil
	}},
}

// ctxT is a context that ends with the test (and at most after a minute).
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// free reports whether another session could take key right now in the given
// mode, asked with a try-lock in a statement of its own on db (a transaction
// lock outside a transaction block ends with the statement).
func free(t *testing.T, db *sql.DB, key keyspace.Key, shared bool) bool {
	t.Helper()
	q, args := sqltext.XactLock(sqltext.Params, sqltext.Mode{Try: true, Shared: shared}, key, 0)
	var ok bool
	if err := db.QueryRowContext(ctxT(t), q, args...).Scan(&ok); err != nil {
		t.Fatalf("try-lock %v from another session: %v", key, err)
	}
	return ok
}

// holdElsewhere takes key in a transaction of its own and returns the
// function that ends it.
func holdElsewhere(t *testing.T, db *sql.DB, key keyspace.Key) (release func()) {
	t.Helper()
	ctx := ctxT(t)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := txlock.Lock(ctx, tx, key); err != nil {
		t.Fatal(err)
	}
	done := false
	release = func() {
		if !done {
			done = true
			if err := tx.Rollback(); err != nil {
				t.Errorf("rollback: %v", err)
			}
		}
	}
	t.Cleanup(release)
	return release
}

// waitWaiting waits until some backend of db's database waits for an
// advisory lock.
func waitWaiting(t *testing.T, db *sql.DB, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		locks, err := testkit.AdvisoryLocks(ctxT(t), db)
		if err != nil {
			t.Fatal(err)
		}
		waiting := 0
		for _, l := range locks {
			if !l.Granted {
				waiting++
			}
		}
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no backend waits for an advisory lock: %+v", locks)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// clean checks that the test left no advisory lock and no connection in use.
func clean(t *testing.T, db *sql.DB) {
	t.Helper()
	testkit.WaitConnsIdle(t, db)
	testkit.WaitNoAdvisoryLocks(t, db)
}

// showLockTimeout reads the transaction's lock_timeout.
func showLockTimeout(t *testing.T, tx txlock.Querier) string {
	t.Helper()
	var s string
	if err := tx.QueryRowContext(ctxT(t), "SHOW lock_timeout").Scan(&s); err != nil {
		t.Fatalf("SHOW lock_timeout: %v", err)
	}
	return s
}
