package middleware_test

import (
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/middleware"
)

// README.md shows routes, from its doc comment to its closing brace, as it
// is here: TestReadmeSnippet keeps the two the same, and ExampleLock_routes
// runs it.

// routes serves the orders API from db, the application's one pool.
func routes(db *sql.DB) http.Handler {
	// Pool: the Locker keeps any number of locks on a quarter of its
	// connections (multiplexed sessions) and waits for locks held by other
	// processes on at most another quarter, so the handlers' own queries
	// always have half of it. Size it for those queries.
	db.SetMaxOpenConns(20)
	db.SetMaxIdleConns(20)
	locker := advisory.New(db)
	orders := keyspace.MustNamespace("orders", 1)
	byID := middleware.PathID(orders, "id") // 400 for anything but an int32 id

	// Session lock: wait up to 2 s for a busy order, then 503; at most 256
	// requests (MaxWaiters' default) wait for one order, more get 503 at once.
	lock := middleware.Lock(locker, byID, middleware.WaitUpTo(2*time.Second))
	mux := http.NewServeMux()
	mux.Handle("PUT /orders/{id}", lock(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		// Write through the lease: on the connection that holds the lock,
		// so no second connection, and it fails (advisory.ErrLockLost) if
		// the lock was lost, where a write through db would go through.
		err := middleware.Lease(ctx).Tx(ctx, func(tx *sql.Tx) error {
			var v int
			if err := tx.QueryRowContext(ctx, "SELECT value FROM orders WHERE id = $1", r.PathValue("id")).Scan(&v); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, "UPDATE orders SET value = $1 WHERE id = $2", v+1, r.PathValue("id"))
			return err
		})
		if err != nil {
			http.Error(w, "not updated", http.StatusConflict)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})))

	// Transaction lock: the handler works in the transaction that holds it,
	// which commits when the handler answers below 400. Fails fast: 409.
	txlocked := middleware.TxLock(db, byID)
	mux.Handle("POST /orders/{id}/pay", txlocked(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, tx := r.Context(), middleware.Tx(r.Context())
		if _, err := tx.ExecContext(ctx, "UPDATE orders SET paid = true WHERE id = $1", r.PathValue("id")); err != nil {
			http.Error(w, "not paid", http.StatusInternalServerError) // rolls back
			return
		}
		w.WriteHeader(http.StatusNoContent) // commits, then answers
	})))
	return mux
}

// The README's HTTP setup: one pool sized for the locks, read-modify-writes
// through the lease, a transaction lock for payments, and 400 for what is
// not an id.
func ExampleLock_routes() {
	db, done := exampleDB()
	defer done()
	srv := httptest.NewServer(routes(db))
	defer srv.Close()

	var wg sync.WaitGroup
	for range 10 { // concurrent read-modify-writes of order 42: none lost
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPut, srv.URL+"/orders/42", nil)
			if res, err := srv.Client().Do(req); err == nil {
				res.Body.Close()
			}
		}()
	}
	wg.Wait()
	call(srv, http.MethodPut, "/orders/abc")
	res, err := srv.Client().Post(srv.URL+"/orders/42/pay", "", nil)
	if err != nil {
		panic(err)
	}
	res.Body.Close()
	fmt.Println(res.Status)
	var v int
	var paid bool
	if err := db.QueryRow("SELECT value, paid FROM orders WHERE id = 42").Scan(&v, &paid); err != nil {
		panic(err)
	}
	fmt.Println("order 42:", v, "updates, paid", paid)
	// Output:
	// 400 Bad Request: invalid resource id
	// 204 No Content
	// order 42: 10 updates, paid true
}

// TestReadmeSnippet checks that README.md shows routes as this file has it,
// so the README's snippet compiles and runs (ExampleLock_routes).
func TestReadmeSnippet(t *testing.T) {
	src, err := os.ReadFile("example_readme_test.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	start := strings.Index(s, "// routes serves")
	end := start + strings.Index(s[start:], "\n}\n") + 3
	if start < 0 || end < start {
		t.Fatal("routes not found in example_readme_test.go")
	}
	if snippet := s[start:end]; !strings.Contains(string(readme), "```go\n"+snippet+"```\n") {
		t.Fatalf("README.md does not show routes as example_readme_test.go has it; paste this as a go block:\n%s", snippet)
	}
}
