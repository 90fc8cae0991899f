package middleware_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/middleware"
)

// TestTxLockOutcome checks when TxLock commits: on a status below 400 or no
// write, before the status is sent; a failed commit becomes a 500.
func TestTxLockOutcome(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		if _, err := e.db.Exec(`CREATE TABLE uniq (v int UNIQUE DEFERRABLE INITIALLY DEFERRED)`); err != nil {
			t.Fatal(err)
		}
		var hookErr error
		lock := middleware.TxLock(e.db, middleware.PathValue(orders, "id"), middleware.WithHooks(middleware.Hooks{
			Rejected: func(r *http.Request, key keyspace.Key, err error) { hookErr = err },
		}))
		cases := []struct {
			name      string
			handler   func(w http.ResponseWriter, r *http.Request)
			status    int
			committed bool
		}{
			{"201", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) }, http.StatusCreated, true},
			{"write without status", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("done")) }, http.StatusOK, true},
			{"no write", func(w http.ResponseWriter, r *http.Request) {}, http.StatusOK, true},
			{"flush", func(w http.ResponseWriter, r *http.Request) { http.NewResponseController(w).Flush() }, http.StatusOK, true},
			{"103 then 204", func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusEarlyHints)
				w.WriteHeader(http.StatusNoContent)
			}, http.StatusNoContent, true},
			{"422", func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "no", http.StatusUnprocessableEntity)
			}, http.StatusUnprocessableEntity, false},
			{"500", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) }, http.StatusInternalServerError, false},
			{"commit fails", func(w http.ResponseWriter, r *http.Request) {
				tx := middleware.Tx(r.Context())
				if _, err := tx.ExecContext(r.Context(), `INSERT INTO uniq VALUES (1), (1)`); err != nil {
					t.Error(err)
				}
				w.WriteHeader(http.StatusCreated)
				if _, err := w.Write([]byte("created")); !errors.Is(err, middleware.ErrCommitFailed) {
					t.Errorf("Write after a failed commit: %v, want ErrCommitFailed", err)
				}
			}, http.StatusInternalServerError, false},
		}
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				hookErr = nil
				mark := i + 1
				mux := http.NewServeMux()
				mux.Handle("/orders/{id}", lock(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					tx := middleware.Tx(r.Context())
					if _, err := tx.ExecContext(r.Context(), `UPDATE orders SET value = $1 WHERE id = 2`, mark); err != nil {
						t.Error(err)
					}
					tc.handler(w, r)
				})))
				srv := serve(t, mux)
				r := do(t, srv.Client(), http.MethodPut, srv.URL+"/orders/2")
				if r.status != tc.status {
					t.Fatalf("status %d (%q), want %d", r.status, r.body, tc.status)
				}
				if got := e.value(t, 2) == mark; got != tc.committed {
					t.Fatalf("committed %v, want %v", got, tc.committed)
				}
				if tc.name == "commit fails" && !errors.Is(hookErr, middleware.ErrCommitFailed) {
					t.Fatalf("Rejected hook got %v, want ErrCommitFailed", hookErr)
				}
			})
		}
		t.Run("committed before the status", func(t *testing.T) { committedBeforeStatus(t, e) })
	})
}

// committedBeforeStatus checks that the commit has happened when the status
// goes out: another connection sees the write right after WriteHeader.
func committedBeforeStatus(t *testing.T, e *env) {
	seen := make(chan int, 1)
	lock := middleware.TxLock(e.db, middleware.PathValue(orders, "id"))
	h := lock(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := middleware.Tx(r.Context()).ExecContext(r.Context(), `UPDATE orders SET value = 7 WHERE id = 3`); err != nil {
			t.Error(err)
		}
		w.WriteHeader(http.StatusOK)
		seen <- e.value(t, 3) // after WriteHeader, still inside the handler
	}))
	mux := http.NewServeMux()
	mux.Handle("/orders/{id}", h)
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodPut, "/orders/3", nil).WithContext(context.Background()))
	if v := <-seen; v != 7 || w.Code != http.StatusOK {
		t.Fatalf("value seen after WriteHeader: %d (status %d), want 7: the commit must precede the status", v, w.Code)
	}
}
