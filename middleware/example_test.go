package middleware_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/middleware"
)

// exampleTB lets an Example use itest's helpers: a failure panics (an
// Example cannot fail otherwise) and the cleanups run when it is done.
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

// exampleDB opens a fresh database with an orders table on the test
// binary's PostgreSQL (see itest) and returns it with the function that
// drops it.
func exampleDB() (*sql.DB, func()) {
	tb := &exampleTB{}
	db := itest.Open(tb, "pgx")
	for _, q := range []string{
		`CREATE TABLE orders (id int PRIMARY KEY, value int NOT NULL DEFAULT 0, paid bool NOT NULL DEFAULT false)`,
		`INSERT INTO orders (id) VALUES (7), (42)`,
	} {
		if _, err := db.Exec(q); err != nil {
			panic(err)
		}
	}
	return db, func() {
		for i := len(tb.cleanups) - 1; i >= 0; i-- {
			tb.cleanups[i]()
		}
	}
}

// call sends a request to srv and prints the status, Retry-After if any,
// and the body.
func call(srv *httptest.Server, method, path string) {
	req, _ := http.NewRequest(method, srv.URL+path, nil)
	res, err := srv.Client().Do(req)
	if err != nil {
		panic(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if ra := res.Header.Get("Retry-After"); ra != "" {
		fmt.Printf("%s (Retry-After: %s): %s\n", res.Status, ra, strings.TrimSpace(string(b)))
		return
	}
	fmt.Printf("%s: %s\n", res.Status, strings.TrimSpace(string(b)))
}

// Lock serialises the requests for one order, wherever they run: the
// ServeMux path value {id} is the key, within the namespace "orders".
func ExampleLock() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()

	ns := keyspace.MustNamespace("orders", 1)
	locker := advisory.New(db)
	lock := middleware.Lock(locker, middleware.PathValue(ns, "id")) // fail fast: 409 when held

	mux := http.NewServeMux()
	mux.Handle("PUT /orders/{id}", lock(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Only this request works on this order now, in every process.
		fmt.Fprintf(w, "order %s updated\n", r.PathValue("id"))
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// Another process is working on order 42.
	other, err := advisory.New(db).Lock(ctx, ns.ID(42))
	if err != nil {
		panic(err)
	}
	call(srv, http.MethodPut, "/orders/42")
	call(srv, http.MethodPut, "/orders/7")
	_ = other.Release(ctx)
	call(srv, http.MethodPut, "/orders/42")
	// Output:
	// 409 Conflict (Retry-After: 1): the resource is locked by another request; retry later
	// 200 OK: order 7 updated
	// 200 OK: order 42 updated
}

// With WaitUpTo the middleware waits for the lock, up to a bound, instead of
// answering 409 at once; beyond the bound the answer is 503.
func ExampleWaitUpTo() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()

	ns := keyspace.MustNamespace("orders", 1)
	lock := middleware.Lock(advisory.New(db), middleware.PathValue(ns, "id"),
		middleware.WaitUpTo(time.Second), middleware.MaxWaiters(8))
	mux := http.NewServeMux()
	mux.Handle("PUT /orders/{id}", lock(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "updated")
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	other, err := advisory.New(db).Lock(ctx, ns.ID(42))
	if err != nil {
		panic(err)
	}
	call(srv, http.MethodPut, "/orders/42") // held for longer than the bound
	_ = other.Release(ctx)
	call(srv, http.MethodPut, "/orders/42")
	// Output:
	// 503 Service Unavailable (Retry-After: 1): timed out waiting for the resource lock; retry later
	// 200 OK: updated
}

// TxLock runs the handler in a transaction that holds the order's lock; the
// transaction commits when the handler answers below 400.
func ExampleTxLock() {
	db, done := exampleDB()
	defer done()

	ns := keyspace.MustNamespace("orders", 1)
	mux := http.NewServeMux()
	mux.Handle("POST /orders/{id}/increment", middleware.TxLock(db, middleware.PathValue(ns, "id"),
		middleware.WaitUpTo(10*time.Second))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, tx := r.Context(), middleware.Tx(r.Context())
		var v int
		if err := tx.QueryRowContext(ctx, "SELECT value FROM orders WHERE id = $1", r.PathValue("id")).Scan(&v); err != nil {
			http.Error(w, "no such order", http.StatusNotFound) // rolls back
			return
		}
		if _, err := tx.ExecContext(ctx, "UPDATE orders SET value = $1 WHERE id = $2", v+1, r.PathValue("id")); err != nil {
			http.Error(w, "update failed", http.StatusInternalServerError) // rolls back
			return
		}
		fmt.Fprintf(w, "value %d\n", v+1) // commits, then sends the 200
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	var wg sync.WaitGroup
	for range 10 { // concurrent read-modify-writes of one row: none lost
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := srv.Client().Post(srv.URL+"/orders/42/increment", "", nil)
			if err == nil {
				res.Body.Close()
			}
		}()
	}
	wg.Wait()
	call(srv, http.MethodPost, "/orders/42/increment")
	call(srv, http.MethodPost, "/orders/1/increment")
	// Output:
	// 200 OK: value 11
	// 404 Not Found: no such order
}

// PathValue maps numeric ids to Namespace.ID and other names to
// Namespace.Hash; only an empty value is a 400.
func ExamplePathValue() {
	ns := keyspace.MustNamespace("orders", 1)
	keyFn := middleware.PathValue(ns, "id")
	for _, id := range []string{"42", "0042", "order-17", ""} {
		r := httptest.NewRequest(http.MethodGet, "/orders/", nil)
		r.SetPathValue("id", id)
		key, err := keyFn(r)
		fmt.Printf("%q -> %v %v\n", id, key, err)
	}
	// Output:
	// "42" -> (1,42) <nil>
	// "0042" -> (1,42) <nil>
	// "order-17" -> (1,9638989) <nil>
	// "" -> 0 middleware: bad lock key: path value "id" is empty or missing
}

// PathID takes int32 ids into a namespace and refuses anything else before
// any lock is tried: the middleware answers 400.
func ExamplePathID() {
	ns := keyspace.MustNamespace("orders", 1)
	keyFn := middleware.PathID(ns, "id")
	for _, id := range []string{"42", "+42", "abc", "99999999999", " "} {
		r := httptest.NewRequest(http.MethodGet, "/orders/", nil)
		r.SetPathValue("id", id)
		key, err := keyFn(r)
		fmt.Printf("%q -> %v %v\n", id, key, err)
	}
	// Output:
	// "42" -> (1,42) <nil>
	// "+42" -> (1,42) <nil>
	// "abc" -> 0 middleware: bad lock key: path value "id" is "abc", not an int32 id
	// "99999999999" -> 0 middleware: bad lock key: path value "id" is "99999999999", not an int32 id
	// " " -> 0 middleware: bad lock key: path value "id" is " ", not an int32 id
}

// Singleton runs a periodic job on one instance only: every instance calls
// the wrapped job on its own schedule, and all but the one that wins the
// lock skip it.
func ExampleSingleton() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()

	report := middleware.Singleton(advisory.New(db), keyspace.Hash("daily-report-job"), func(ctx context.Context) error {
		fmt.Println("report written")
		return nil
	})
	if err := report(ctx); err != nil {
		fmt.Println(err)
	}

	// While another instance runs it, this one skips.
	other, err := advisory.New(db).Lock(ctx, keyspace.Hash("daily-report-job"))
	if err != nil {
		panic(err)
	}
	defer other.Release(ctx)
	if err := report(ctx); errors.Is(err, middleware.ErrSkipped) {
		fmt.Println("skipped: another instance runs it")
	}
	// Output:
	// report written
	// skipped: another instance runs it
}

// SingletonNamed locks a job by its name (keyspace.Hash of it, as pglock run
// does), and its error says the name.
func ExampleSingletonNamed() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()

	report := middleware.SingletonNamed(advisory.New(db), "daily-report", func(ctx context.Context) error {
		fmt.Println("report written")
		return nil
	})
	other, err := advisory.New(db).Lock(ctx, keyspace.Hash("daily-report")) // another instance runs it
	if err != nil {
		panic(err)
	}
	defer other.Release(ctx)
	err = report(ctx)
	fmt.Println(errors.Is(err, middleware.ErrSkipped))
	fmt.Println(err)
	// Output:
	// true
	// middleware: job "daily-report" skipped: another session holds its lock
}

// Keyed processes queue messages one per key at a time, across every
// consumer process, and different keys in parallel.
func ExampleKeyed_Handle() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()

	ns := keyspace.MustNamespace("orders", 1)
	consumer := middleware.NewKeyed(advisory.New(db))
	messages := []struct {
		order int32
		event string
	}{{42, "paid"}, {7, "created"}, {42, "shipped"}}
	var mu sync.Mutex
	log := map[int32][]string{}
	var wg sync.WaitGroup
	for _, m := range messages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := consumer.Handle(ctx, ns.ID(m.order), func(ctx context.Context) error {
				mu.Lock()
				defer mu.Unlock()
				log[m.order] = append(log[m.order], m.event)
				return nil
			})
			if err != nil {
				fmt.Println(err)
			}
		}()
	}
	wg.Wait()
	fmt.Println(len(log[42]), "events for order 42,", len(log[7]), "for order 7")
	// Output:
	// 2 events for order 42, 1 for order 7
}

// WithResponder replaces the plain-text answers, here with JSON. The
// example needs no database: a request without an id is answered before any
// lock is tried.
func ExampleWithResponder() {
	ns := keyspace.MustNamespace("orders", 1)
	jsonAnswer := func(w http.ResponseWriter, r *http.Request, err error, retryAfter time.Duration) {
		status, code := http.StatusServiceUnavailable, "unavailable"
		switch {
		case errors.Is(err, middleware.ErrBadKey):
			status, code = http.StatusBadRequest, "bad_id"
		case errors.Is(err, middleware.ErrBusy):
			status, code = http.StatusConflict, "locked"
		}
		if status != http.StatusBadRequest {
			w.Header().Set("Retry-After", strconv.Itoa(int((retryAfter+time.Second-1)/time.Second)))
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, "{\"error\":%q}\n", code)
	}
	lock := middleware.Lock(advisory.New(nil), middleware.PathValue(ns, "id"), middleware.WithResponder(jsonAnswer))

	mux := http.NewServeMux()
	mux.Handle("PUT /orders/{id...}", lock(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodPut, "/orders/", nil))
	fmt.Print(w.Code, " ", w.Header().Get("Content-Type"), " ", w.Body.String())
	// Output:
	// 400 application/json {"error":"bad_id"}
}
