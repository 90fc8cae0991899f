package mocktest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/DATA-DOG/go-sqlmock"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/middleware"
	"github.com/pgadvisory/pgadvisory/mocktest"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// A user's HTTP handler, wrapped by the locking middleware, tested with no
// database: the mock answers the lock statements the middleware sends.
// (In a test, mocktest.New(t) does the Open, the check and the Close.)
func Example_middleware() {
	db, m, err := mocktest.Open()
	if err != nil {
		panic(err)
	}
	defer m.Close()

	// The application: PUT /orders/{id} runs one at a time per order.
	orders := keyspace.MustNamespace("orders", 1)
	updateOrder := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "updated order", r.PathValue("id"))
	})
	mux := http.NewServeMux()
	lock := middleware.Lock(m.Locker(), middleware.PathValue(orders, "id")) // fail fast: 409 when held
	mux.Handle("PUT /orders/{id}", lock(updateOrder))

	// First request: the lock is free; it is released after the handler.
	m.ExpectTryLock(orders.ID(42), true)
	m.ExpectUnlock(orders.ID(42), true)
	// Second request: another process holds the order.
	m.ExpectTryLock(orders.ID(42), false)

	for range 2 {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("PUT", "/orders/42", nil))
		fmt.Println(rec.Code, rec.Header().Get("Retry-After") != "")
	}
	fmt.Println("expectations met:", m.ExpectationsWereMet() == nil, db.Stats().InUse == 0)
	// Output:
	// 200 false
	// 409 true
	// expectations met: true true
}

// The transaction-scoped middleware: the handler works on the transaction
// that holds the lock, and the mock expects the whole unit of work.
func Example_txMiddleware() {
	db, m, err := mocktest.Open()
	if err != nil {
		panic(err)
	}
	defer m.Close()

	invoices := keyspace.MustNamespace("invoices", 2)
	pay := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tx := middleware.Tx(r.Context())
		if _, err := tx.ExecContext(r.Context(), "UPDATE invoices SET paid = true WHERE id = $1", r.PathValue("id")); err != nil {
			http.Error(w, "failed", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux := http.NewServeMux()
	mux.Handle("POST /invoices/{id}/pay", middleware.TxLock(db, middleware.PathValue(invoices, "id"),
		middleware.WaitUpTo(2*time.Second))(pay))

	m.ExpectBegin()
	m.ExpectXactTryLock(invoices.ID(7), true) // TxLock tries first; only a busy key is waited for
	// (then ExpectXactTryLock(key, false) and ExpectXactLock(key, mocktest.WithLockTimeout(2*time.Second)))
	m.ExpectExec("UPDATE invoices SET paid = true WHERE id = $1").WithArgs("7").WillReturnResult(sqlmock.NewResult(0, 1))
	m.ExpectCommit()

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("POST", "/invoices/7/pay", nil))
	fmt.Println(rec.Code, m.ExpectationsWereMet())
	// Output: 204 <nil>
}

// A job that runs under a session lock, tested without a database. In a test,
// write db, m := mocktest.New(t) instead of Open and Close.
func ExampleMock_ExpectLock() {
	_, m, err := mocktest.Open(mocktest.WithLockTimeout(time.Second))
	if err != nil {
		panic(err)
	}
	defer m.Close()
	key := keyspace.Hash("daily-report-job")

	m.ExpectLock(key)
	m.ExpectUnlock(key, true)
	m.ExpectLockTimeout(key)

	// The code under test; m.Locker() is advisory.New(db, ...) for the mock.
	locker := m.Locker()
	err = locker.Do(context.Background(), key, func(context.Context) error { return nil })
	fmt.Println("first run:", err)
	err = locker.Do(context.Background(), key, func(context.Context) error { return nil })
	fmt.Println("second run timed out:", errors.Is(err, advisory.ErrLockTimeout))
	fmt.Println(m.ExpectationsWereMet())
	// Output:
	// first run: <nil>
	// second run timed out: true
	// <nil>
}

// Code that takes transaction locks on its own *sql.Tx.
func ExampleMock_ExpectXactLockAll() {
	db, m, err := mocktest.Open()
	if err != nil {
		panic(err)
	}
	defer m.Close()
	accounts := keyspace.MustNamespace("accounts", 3)

	m.ExpectBegin()
	m.ExpectXactLockAll(accounts.ID(1), accounts.ID(2)) // any order: LockAll sorts
	m.ExpectCommit()

	// The code under test.
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	if err := txlock.LockAll(ctx, tx, accounts.ID(2), accounts.ID(1)); err != nil {
		panic(err)
	}
	fmt.Println(tx.Commit(), m.ExpectationsWereMet())
	// Output: <nil> <nil>
}

// A test that forgets ExpectUnlock fails, even though the code under test
// swallows the failed release: the failure says what was sent and what was
// expected. (With New, the test's cleanup reports it; with Open, as here,
// ExpectationsWereMet does.)
func ExampleMock_ExpectationsWereMet() {
	_, m, err := mocktest.Open()
	if err != nil {
		panic(err)
	}
	defer m.Close()
	key := keyspace.Hash("daily-report-job")

	m.ExpectLock(key) // and no ExpectUnlock

	lease, err := m.Locker().Lock(context.Background(), key)
	if err != nil {
		panic(err)
	}
	_ = lease.Release(context.Background()) // logged and forgotten, say

	lines := strings.Split(m.ExpectationsWereMet().Error(), "\n")
	fmt.Println(strings.Join(lines[:3], "\n"))
	// Output:
	// mocktest: 1 call(s) of the code under test matched no expectation and failed (mocktest.Lenient allows that):
	//   1. sent     Exec "SELECT WHERE pg_advisory_unlock($1::int8)" with args [2900925584919938136]: advisory's release of 2900925584919938136, which ExpectUnlock expects
	//      expected nothing more: every expectation had been met
}
