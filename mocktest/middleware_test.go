package mocktest_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/middleware"
	"github.com/pgadvisory/pgadvisory/mocktest"
)

var mwNS = keyspace.MustNamespace("mocktest-middleware", 7302)

// TestMiddlewareSequences pins what the package documentation tells users to
// expect for a request through the middleware: a try, and with WaitUpTo a
// wait only after a refused try.
func TestMiddlewareSequences(t *testing.T) {
	key := mwNS.ID(7)
	wait := 2 * time.Second
	cases := []struct {
		name   string
		txlock bool
		opts   []middleware.Option
		expect func(m *mocktest.Mock)
		status int
	}{
		{"Lock, free", false, nil, func(m *mocktest.Mock) {
			m.ExpectTryLock(key, true)
			m.ExpectUnlock(key, true)
		}, http.StatusNoContent},
		{"Lock, busy, fail fast", false, nil, func(m *mocktest.Mock) {
			m.ExpectTryLock(key, false)
		}, http.StatusConflict},
		{"Lock, busy, wait", false, []middleware.Option{middleware.WaitUpTo(wait)}, func(m *mocktest.Mock) {
			m.ExpectTryLock(key, false)
			m.ExpectLock(key)
			m.ExpectUnlock(key, true)
		}, http.StatusNoContent},
		{"TxLock, free", true, []middleware.Option{middleware.WaitUpTo(wait)}, func(m *mocktest.Mock) {
			m.ExpectBegin()
			m.ExpectXactTryLock(key, true)
			m.ExpectCommit()
		}, http.StatusNoContent},
		{"TxLock, busy, fail fast", true, nil, func(m *mocktest.Mock) {
			m.ExpectBegin()
			m.ExpectXactTryLock(key, false)
			m.ExpectRollback()
		}, http.StatusConflict},
		{"TxLock, busy, wait", true, []middleware.Option{middleware.WaitUpTo(wait)}, func(m *mocktest.Mock) {
			m.ExpectBegin()
			m.ExpectXactTryLock(key, false)
			m.ExpectXactLock(key, mocktest.WithLockTimeout(wait))
			m.ExpectCommit()
		}, http.StatusNoContent},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, m := mocktest.New(t)
			tc.expect(m)
			mw := middleware.Lock(m.Locker(), middleware.PathID(mwNS, "id"), tc.opts...)
			if tc.txlock {
				mw = middleware.TxLock(db, middleware.PathID(mwNS, "id"), tc.opts...)
			}
			mux := http.NewServeMux()
			mux.Handle("PUT /orders/{id}", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusNoContent)
			})))
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPut, "/orders/7", nil))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d", rec.Code, tc.status)
			}
		})
	}
}
