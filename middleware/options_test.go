package middleware_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/middleware"
)

// TestBuildPanics checks that bad configuration panics when the middleware
// is built, with the package prefix, and never per request.
func TestBuildPanics(t *testing.T) {
	locker := advisory.New(nil)
	keyFn := middleware.PathValue(orders, "id")
	db := &sql.DB{}
	noop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	cases := map[string]func(){
		"Lock nil locker":    func() { middleware.Lock(nil, keyFn) },
		"Lock nil KeyFunc":   func() { middleware.Lock(locker, nil) },
		"Lock nil Option":    func() { middleware.Lock(locker, keyFn, nil) },
		"Lock nil handler":   func() { middleware.Lock(locker, keyFn)(nil) },
		"Lock WithTxOptions": func() { middleware.Lock(locker, keyFn, middleware.WithTxOptions(&sql.TxOptions{})) },
		"TxLock nil db":      func() { middleware.TxLock(nil, keyFn) },
		"TxLock nil KeyFunc": func() { middleware.TxLock(db, nil) },
		"WaitUpTo(0)":        func() { middleware.WaitUpTo(0) },
		"MaxWaiters(0)":      func() { middleware.MaxWaiters(0) },
		"RetryAfter(-1)":     func() { middleware.RetryAfter(-1) },
		"nil Responder":      func() { middleware.WithResponder(nil) },
		"PathValue no name":  func() { middleware.PathValue(orders, "") },
		"PathID no name":     func() { middleware.PathID(orders, "") },
		"PathInt64 no name":  func() { middleware.PathInt64("") },
		"SingletonNamed no name": func() {
			middleware.SingletonNamed(locker, "", func(context.Context) error { return nil })
		},
		"Singleton nil locker": func() { middleware.Singleton(nil, keyspace.Int64(1), func(context.Context) error { return nil }) },
		"Singleton nil job":    func() { middleware.Singleton(locker, keyspace.Int64(1), nil) },
		"NewKeyed nil locker":  func() { middleware.NewKeyed(nil) },
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			defer func() {
				p := recover()
				if s, ok := p.(string); !ok || !strings.HasPrefix(s, "middleware: ") {
					t.Fatalf("recovered %#v, want a panic with the package prefix", p)
				}
			}()
			f()
		})
	}
	// A good configuration serves; a bad key is answered, not panicked on.
	h := middleware.Lock(locker, keyFn, middleware.WaitUpTo(time.Second), middleware.MaxWaiters(1),
		middleware.RetryAfter(time.Second), middleware.SharedForSafeMethods())(noop)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	if w.Code != http.StatusBadRequest {
		t.Fatalf("request without the path value: %d, want 400", w.Code)
	}
}

// TestDefaultResponder checks the status, Retry-After and body for every
// reason, and that the cause never reaches the body.
func TestDefaultResponder(t *testing.T) {
	cause := errors.New("pq: secret detail")
	cases := []struct {
		err        error
		retryAfter time.Duration
		status     int
		header     string
	}{
		{middleware.ErrBadKey, time.Second, http.StatusBadRequest, ""},
		{middleware.ErrBusy, 1500 * time.Millisecond, http.StatusConflict, "2"},
		{middleware.ErrWaitTimeout, time.Millisecond, http.StatusServiceUnavailable, "1"},
		{middleware.ErrTooManyWaiters, 10 * time.Second, http.StatusServiceUnavailable, "10"},
		{middleware.ErrUnavailable, time.Second, http.StatusServiceUnavailable, "1"},
		{middleware.ErrCommitFailed, time.Second, http.StatusInternalServerError, ""},
	}
	for _, tc := range cases {
		t.Run(tc.err.Error(), func(t *testing.T) {
			w := httptest.NewRecorder()
			middleware.DefaultResponder(w, httptest.NewRequest(http.MethodPut, "/", nil),
				fmt.Errorf("%w: %w", tc.err, cause), tc.retryAfter)
			if w.Code != tc.status || w.Header().Get("Retry-After") != tc.header {
				t.Fatalf("got %d, Retry-After %q; want %d, %q", w.Code, w.Header().Get("Retry-After"), tc.status, tc.header)
			}
			if b := w.Body.String(); b == "" || strings.Contains(b, "secret") || len(b) > 100 {
				t.Fatalf("body %q: want a short one without the cause", b)
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
}

// TestLogger checks that a rejection is logged at Debug with the reason and
// a lock failure at Error.
func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := middleware.Lock(advisory.New(nil), middleware.PathValue(orders, "id"), middleware.WithLogger(logger))(
		http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	mux := http.NewServeMux()
	mux.Handle("/orders/{id...}", h)
	mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPut, "/orders/", nil))
	mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPut, "/orders/1", nil))
	out := buf.String()
	if !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "bad lock key") ||
		!strings.Contains(out, "level=ERROR") || !strings.Contains(out, "lock service unavailable") {
		t.Fatalf("log:\n%s", out)
	}
}
