package middleware_test

import (
	"database/sql"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/middleware"
)

// TestKeyFuncs checks what each key function makes of a path value: the
// key, or an error that matches ErrBadKey and names the package once.
func TestKeyFuncs(t *testing.T) {
	bad := keyspace.Key{}
	cases := []struct {
		fn    string
		value string
		want  keyspace.Key // bad: an error
	}{
		{"PathID", "42", orders.ID(42)},
		{"PathID", "+42", orders.ID(42)},
		{"PathID", "0042", orders.ID(42)},
		{"PathID", "-7", orders.ID(-7)},
		{"PathID", "2147483647", orders.ID(2147483647)},
		{"PathID", "-2147483648", orders.ID(-2147483648)},
		{"PathID", "2147483648", bad},
		{"PathID", "99999999999", bad},
		{"PathID", "", bad},
		{"PathID", " ", bad},
		{"PathID", " 42", bad},
		{"PathID", "4 2", bad},
		{"PathID", "abc", bad},
		{"PathID", "0x2A", bad},
		{"PathID", "1e3", bad},
		{"PathID", "1_000", bad},
		{"PathID", "４２", bad}, // fullwidth digits
		{"PathInt64", "42", keyspace.Int64(42)},
		{"PathInt64", "99999999999", keyspace.Int64(99999999999)},
		{"PathInt64", "-9223372036854775808", keyspace.Int64(-9223372036854775808)},
		{"PathInt64", "9223372036854775808", bad},
		{"PathInt64", "", bad},
		{"PathInt64", "order-17", bad},
		{"PathValue", "42", orders.ID(42)},
		{"PathValue", "order-17", orders.Hash("order-17")},
		{"PathValue", " ", orders.Hash(" ")},
		{"PathValue", "", bad},
	}
	fns := map[string]middleware.KeyFunc{
		"PathID":    middleware.PathID(orders, "id"),
		"PathInt64": middleware.PathInt64("id"),
		"PathValue": middleware.PathValue(orders, "id"),
	}
	for _, tc := range cases {
		t.Run(tc.fn+"/"+tc.value, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPut, "/", nil)
			r.SetPathValue("id", tc.value)
			key, err := fns[tc.fn](r)
			if tc.want != bad {
				if err != nil || key != tc.want {
					t.Fatalf("got %v, %v; want %v", key, err, tc.want)
				}
				return
			}
			if !errors.Is(err, middleware.ErrBadKey) {
				t.Fatalf("got %v, %v; want an error matching ErrBadKey", key, err)
			}
			if msg := err.Error(); strings.Count(msg, "middleware:") != 1 || !strings.Contains(msg, `"id"`) {
				t.Fatalf("message %q: want the package named once, and the path value's name", msg)
			}
		})
	}
}

// TestBadIDNoRoundTrip checks that PathID answers 400 for what is not an
// id, under both middlewares, without a round trip: their database does not
// exist, so a request that got as far as locking is answered 503 instead.
func TestBadIDNoRoundTrip(t *testing.T) {
	for _, driver := range itest.Drivers {
		t.Run(driver, func(t *testing.T) {
			t.Cleanup(func() { testkit.VerifyNone(t) })
			dead, err := sql.Open(driver, "postgres://nobody@127.0.0.1:1/nowhere?sslmode=disable&connect_timeout=2")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { dead.Close() })
			h := &reached{}
			mux := http.NewServeMux()
			mux.Handle("PUT /lock/{id}", middleware.Lock(advisory.New(dead), middleware.PathID(orders, "id"))(h))
			mux.Handle("PUT /txlock/{id}", middleware.TxLock(dead, middleware.PathID(orders, "id"))(h))
			mux.Handle("PUT /bigint/{id}", middleware.Lock(advisory.New(dead), middleware.PathInt64("id"))(h))
			cases := []struct {
				path string
				want int
			}{
				{"/lock/abc", http.StatusBadRequest},
				{"/lock/99999999999", http.StatusBadRequest},
				{"/lock/%20", http.StatusBadRequest},
				{"/lock/4%202", http.StatusBadRequest},
				{"/txlock/abc", http.StatusBadRequest},
				{"/txlock/99999999999", http.StatusBadRequest},
				{"/txlock/%20", http.StatusBadRequest},
				{"/bigint/9223372036854775808", http.StatusBadRequest},
				{"/bigint/%20", http.StatusBadRequest},
				// An id goes on to the database, which is not there: 503
				// shows that the test would see a round trip.
				{"/lock/42", http.StatusServiceUnavailable},
				{"/txlock/42", http.StatusServiceUnavailable},
				{"/bigint/99999999999", http.StatusServiceUnavailable},
			}
			for _, tc := range cases {
				w := httptest.NewRecorder()
				mux.ServeHTTP(w, httptest.NewRequest(http.MethodPut, tc.path, nil))
				if w.Code != tc.want {
					t.Errorf("PUT %s: %d %q, want %d", tc.path, w.Code, w.Body.String(), tc.want)
				}
			}
			if h.n.Load() != 0 {
				t.Fatal("the handler ran")
			}
		})
	}
}
