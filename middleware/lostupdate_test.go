package middleware_test

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/middleware"
)

const (
	lostUpdateRequests = 200
	lostUpdatePool     = 20 // SetMaxOpenConns of the application's pool and of the lock pool
)

// TestLostUpdates sends 200 concurrent read-modify-write requests for one
// order: without a lock some increments are lost, under Lock and under
// TxLock the final value is exactly 200.
func TestLostUpdates(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		cases := []struct {
			name  string
			build func(t *testing.T, e *env) http.Handler
		}{
			{"no lock", func(t *testing.T, e *env) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					id, _ := strconv.Atoi(r.PathValue("id"))
					if err := increment(r.Context(), e.db, id); err != nil {
						http.Error(w, err.Error(), http.StatusInternalServerError)
					}
				})
			}},
			{"Lock", func(t *testing.T, e *env) http.Handler {
				// The Locker gets a pool of its own, as the package
				// documentation advises: the 200 waiters queue for its
				// connections and cannot starve the handler of e.db's.
				lockDB := itest.OpenDSN(t, driver, e.dsn) // closed before e's checks run
				lockDB.SetMaxOpenConns(lostUpdatePool)
				lockDB.SetMaxIdleConns(lostUpdatePool)
				t.Cleanup(func() { testkit.WaitConnsIdle(t, lockDB) })
				lock := middleware.Lock(advisory.New(lockDB), middleware.PathValue(orders, "id"),
					middleware.WaitUpTo(60*time.Second), middleware.MaxWaiters(lostUpdateRequests))
				return lock(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					id, _ := strconv.Atoi(r.PathValue("id"))
					if err := increment(r.Context(), e.db, id); err != nil {
						http.Error(w, err.Error(), http.StatusInternalServerError)
					}
				}))
			}},
			{"Lock on the shared pool, capped", func(t *testing.T, e *env) http.Handler {
				// One pool for locks and handlers: the cap keeps waiters
				// below the pool size minus the holder's two connections
				// (its lease and its handler's query); the requests beyond
				// it get 503 and come back when Retry-After says.
				lock := middleware.Lock(advisory.New(e.db), middleware.PathValue(orders, "id"),
					middleware.WaitUpTo(60*time.Second), middleware.MaxWaiters(lostUpdatePool-4))
				return lock(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					id, _ := strconv.Atoi(r.PathValue("id"))
					if err := increment(r.Context(), e.db, id); err != nil {
						http.Error(w, err.Error(), http.StatusInternalServerError)
					}
				}))
			}},
			{"TxLock", func(t *testing.T, e *env) http.Handler {
				// Waiters beyond the pool wait for a connection to begin
				// their transaction; the holder needs no other.
				lock := middleware.TxLock(e.db, middleware.PathValue(orders, "id"),
					middleware.WaitUpTo(60*time.Second), middleware.MaxWaiters(lostUpdateRequests))
				return lock(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					id, _ := strconv.Atoi(r.PathValue("id"))
					if err := increment(r.Context(), middleware.Tx(r.Context()), id); err != nil {
						http.Error(w, err.Error(), http.StatusInternalServerError)
					}
				}))
			}},
		}
		e := setup(t, driver)
		e.db.SetMaxOpenConns(lostUpdatePool)
		e.db.SetMaxIdleConns(lostUpdatePool) // else every lease past 2 dials a new backend
		for i, tc := range cases {
			row := 3 + i // each case its own order
			t.Run(tc.name, func(t *testing.T) {
				mux := http.NewServeMux()
				mux.Handle("POST /orders/{id}/increment", tc.build(t, e))
				srv := serve(t, mux)

				ctx := timeout(t, 90*time.Second)
				start := time.Now()
				var wg sync.WaitGroup
				var tries, failures atomic.Int64
				for range lostUpdateRequests {
					wg.Add(1)
					go func() {
						defer wg.Done()
						r, n, err := sendRetrying(ctx, srv.Client(), http.MethodPost, srv.URL+"/orders/"+strconv.Itoa(row)+"/increment")
						tries.Add(int64(n))
						if err != nil || r.status != http.StatusOK {
							failures.Add(1)
							t.Errorf("request: %d %q %v", r.status, r.body, err)
						}
					}()
				}
				wg.Wait()
				got := e.value(t, row)
				lost := lostUpdateRequests - got
				t.Logf("%d requests (%d sends with retries) in %v: final value %d, %d updates lost",
					lostUpdateRequests, tries.Load(), time.Since(start).Round(time.Millisecond), got, lost)
				if failures.Load() > 0 {
					t.Fatalf("%d requests failed", failures.Load())
				}
				if tc.name == "no lock" {
					if lost <= 0 {
						t.Fatalf("no lost update without a lock (final %d): the test cannot tell the lock works", got)
					}
					return
				}
				if got != lostUpdateRequests {
					t.Fatalf("final value %d, want %d: %d updates lost under the lock", got, lostUpdateRequests, lost)
				}
			})
		}
	})
}
