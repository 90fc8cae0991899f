package middleware_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/middleware"
)

// TestLostLockCancelsRequest terminates the backend that holds a request's
// lock while the handler runs: the handler sees its context end with a cause
// wrapping advisory.ErrLockLost, and the Lost hook runs.
func TestLostLockCancelsRequest(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		locker := advisory.New(e.db, advisory.WithKeepAlive(100*time.Millisecond))
		hookErr := make(chan error, 1)
		lock := middleware.Lock(locker, middleware.PathValue(orders, "id"),
			middleware.WithHooks(middleware.Hooks{Lost: func(r *http.Request, key keyspace.Key, err error) { hookErr <- err }}))

		pids := make(chan int, 1)
		cause := make(chan error, 1)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			pids <- middleware.Lease(r.Context()).PID()
			select {
			case <-r.Context().Done():
				cause <- context.Cause(r.Context())
				http.Error(w, "lock lost", http.StatusServiceUnavailable)
			case <-time.After(20 * time.Second):
				cause <- errors.New("the request context was not cancelled within 20 s")
			}
		})
		url, c := mount(t, lock, h)
		got := make(chan response, 1)
		go func() {
			r, _ := send(timeout(t, 30*time.Second), c, http.MethodPost, url+"/orders/1")
			got <- r
		}()
		pid := <-pids
		start := time.Now()
		testkit.TerminateBackend(t, e.admin, pid)
		err := <-cause
		took := time.Since(start)
		if !errors.Is(err, advisory.ErrLockLost) {
			t.Fatalf("handler's context cause: %v, want advisory.ErrLockLost", err)
		}
		if r := <-got; r.status != http.StatusServiceUnavailable {
			t.Fatalf("got %+v, want the handler's 503", r)
		}
		if err := <-hookErr; !errors.Is(err, advisory.ErrLockLost) {
			t.Fatalf("Lost hook got %v", err)
		}
		t.Logf("context cancelled %v after pg_terminate_backend(%d) (keepalive 100ms): %v", took.Round(time.Millisecond), pid, err)
	})
}

// TestPanicReleases makes the handler panic under both middlewares: the
// panic reaches the caller, the lock is released (no advisory lock is left,
// a new request gets it) and TxLock rolls the transaction back.
func TestPanicReleases(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		for ki, kind := range kinds {
			row := 1 + ki // each kind its own order
			t.Run(kind.name, func(t *testing.T) {
				mux := http.NewServeMux()
				mux.Handle("/orders/{id}", kind.build(e, middleware.PathValue(orders, "id"))(http.HandlerFunc(
					func(w http.ResponseWriter, r *http.Request) {
						if tx := middleware.Tx(r.Context()); tx != nil {
							if _, err := tx.ExecContext(r.Context(), `UPDATE orders SET value = 99 WHERE id = $1`, row); err != nil {
								t.Error(err)
							}
						}
						if r.Method == http.MethodPost {
							panic("boom")
						}
					})))
				func() {
					defer func() {
						if p := recover(); p != "boom" {
							t.Fatalf("recovered %v, want the handler's panic", p)
						}
					}()
					mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/orders/"+strconv.Itoa(row), nil))
				}()
				testkit.WaitNoAdvisoryLocks(t, e.admin)
				if v := e.value(t, row); v != 0 {
					t.Fatalf("value %d after a panic, want 0 (rolled back)", v)
				}
				w := httptest.NewRecorder()
				mux.ServeHTTP(w, httptest.NewRequest(http.MethodPut, "/orders/"+strconv.Itoa(row), nil))
				if w.Code != http.StatusOK {
					t.Fatalf("after the panic: %d %q, want 200", w.Code, w.Body.String())
				}
			})
		}
	})
}

// TestTxLockBackendKilled terminates the backend of a TxLock transaction
// while the handler runs: the lock went with the session, and so did the
// transaction, so the commit fails and the client gets 500, not the
// handler's 200.
func TestTxLockBackendKilled(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		pids := make(chan int, 1)
		proceed := make(chan struct{})
		var rejected error
		lock := middleware.TxLock(e.db, middleware.PathValue(orders, "id"),
			middleware.WithHooks(middleware.Hooks{Rejected: func(r *http.Request, key keyspace.Key, err error) { rejected = err }}))
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var pid int
			if err := middleware.Tx(r.Context()).QueryRowContext(r.Context(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
				t.Error(err)
			}
			pids <- pid
			<-proceed
			w.WriteHeader(http.StatusOK)
		})
		url, c := mount(t, lock, h)
		got := make(chan response, 1)
		go func() {
			r, _ := send(timeout(t, 30*time.Second), c, http.MethodPost, url+"/orders/1")
			got <- r
		}()
		testkit.TerminateBackend(t, e.admin, <-pids)
		close(proceed)
		if r := <-got; r.status != http.StatusInternalServerError {
			t.Fatalf("got %+v, want 500 from the failed commit", r)
		}
		if !errors.Is(rejected, middleware.ErrCommitFailed) {
			t.Fatalf("Rejected hook got %v, want ErrCommitFailed", rejected)
		}
		t.Logf("commit after the backend was killed: %v", rejected)
	})
}
