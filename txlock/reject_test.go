package txlock_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/jmoiron/sqlx"

	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// nonTransactions are the values that must be refused: each would run the
// lock statement in a transaction of its own.
func nonTransactions(db *sql.DB, conn *sql.Conn, driverName string) map[string]txlock.Querier {
	x := sqlx.NewDb(db, driverName)
	return map[string]txlock.Querier{
		"*sql.DB":    db,
		"*sql.Conn":  conn,
		"*sqlx.DB":   x,
		"*sqlx.Conn": &sqlx.Conn{Conn: conn},
	}
}

// checkRejected calls every lock function with q and wants ErrNotTransaction.
func checkRejected(t *testing.T, name string, q txlock.Querier) {
	t.Helper()
	ctx := context.Background()
	k := keyspace.Int64(1)
	errs := map[string]error{"Lock": txlock.Lock(ctx, q, k), "LockShared": txlock.LockShared(ctx, q, k),
		"LockAll": txlock.LockAll(ctx, q, k), "LockAllTimeout": txlock.LockAllTimeout(ctx, q, 1, k)}
	_, errs["TryLock"] = txlock.TryLock(ctx, q, k)
	_, errs["TryLockShared"] = txlock.TryLockShared(ctx, q, k)
	for fn, err := range errs {
		if !errors.Is(err, txlock.ErrNotTransaction) {
			t.Errorf("%s(%s) = %v; want ErrNotTransaction", fn, name, err)
		}
	}
}

// TestRejectsNonTransactionMock: against a sqlmock database with no
// expectations and a matcher that fails on any statement, nothing is sent.
func TestRejectsNonTransactionMock(t *testing.T) {
	db, mock, err := sqlmock.New(sqlmock.QueryMatcherOption(sqlmock.QueryMatcherFunc(func(_, actual string) error {
		t.Errorf("statement sent: %s", actual)
		return errors.New("unexpected")
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mock.MatchExpectationsInOrder(true)
	// An expectation that must stay unmet: if anything reached the driver,
	// the matcher above would see it.
	mock.ExpectQuery("never")
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for name, q := range nonTransactions(db, conn, "sqlmock") {
		checkRejected(t, name, q)
	}
}
