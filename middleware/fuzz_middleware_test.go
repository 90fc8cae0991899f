package middleware_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/middleware"
)

var fuzzNS = keyspace.MustNamespace("middleware-fuzz", 7719)

// FuzzPathValue: the key function never panics; an empty value is an error;
// any other value maps into the namespace, the same value always to the same
// key, and every spelling of an int32 to ns.ID of it.
func FuzzPathValue(f *testing.F) {
	for _, s := range []string{"", "42", "-7", "0042", "+42", "2147483647", "2147483648", "-2147483649",
		"9223372036854775807", "99999999999999999999", "order-17", " 42", "42 ", "\x00", "é", "a/b", "%2F"} {
		f.Add(s)
	}
	keyFn := middleware.PathValue(fuzzNS, "id")
	f.Fuzz(func(t *testing.T, v string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.SetPathValue("id", v)
		k, err := keyFn(r)
		if v == "" {
			if err == nil {
				t.Fatalf("empty value gave key %v", k)
			}
			return
		}
		if err != nil {
			t.Fatalf("PathValue(%q): %v", v, err)
		}
		if !fuzzNS.Contains(k) {
			t.Fatalf("PathValue(%q) = %v, outside namespace %v", v, k, fuzzNS)
		}
		k2, err := keyFn(r)
		if err != nil || k2 != k {
			t.Fatalf("PathValue(%q) not deterministic: %v then %v, %v", v, k, k2, err)
		}
		if n, err := strconv.ParseInt(v, 10, 32); err == nil && k != fuzzNS.ID(int32(n)) {
			t.Fatalf("PathValue(%q) = %v, want ns.ID(%d) = %v", v, k, n, fuzzNS.ID(int32(n)))
		}
	})
}

// FuzzPathID: the integer key functions never panic, and take a value
// exactly when strconv.ParseInt does, in range; everything else matches
// ErrBadKey.
func FuzzPathID(f *testing.F) {
	for _, s := range []string{"", "42", "-7", "0042", "+42", "2147483647", "2147483648", "9223372036854775807",
		"9223372036854775808", " 42", "4 2", "0x2A", "1_000", "abc", "%20", "\x00", "٤٢"} {
		f.Add(s)
	}
	id, big := middleware.PathID(fuzzNS, "id"), middleware.PathInt64("id")
	f.Fuzz(func(t *testing.T, v string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.SetPathValue("id", v)
		k, err := id(r)
		if n, perr := strconv.ParseInt(v, 10, 32); perr == nil {
			if err != nil || k != fuzzNS.ID(int32(n)) {
				t.Fatalf("PathID(%q) = %v, %v; want %v", v, k, err, fuzzNS.ID(int32(n)))
			}
		} else if !errors.Is(err, middleware.ErrBadKey) {
			t.Fatalf("PathID(%q) = %v, %v; want ErrBadKey", v, k, err)
		}
		k, err = big(r)
		if n, perr := strconv.ParseInt(v, 10, 64); perr == nil {
			if err != nil || k != keyspace.Int64(n) {
				t.Fatalf("PathInt64(%q) = %v, %v; want %v", v, k, err, keyspace.Int64(n))
			}
		} else if !errors.Is(err, middleware.ErrBadKey) {
			t.Fatalf("PathInt64(%q) = %v, %v; want ErrBadKey", v, k, err)
		}
	})
}

// FuzzLockBadRequests sends arbitrary path segments through a ServeMux into
// the Lock middleware over a Locker without a database: nothing panics, the
// handler behind it never runs, and each answer is one of the documented
// ones (400 for a bad key, 503 with Retry-After when no lock can be taken;
// the mux itself may redirect or not find a route).
func FuzzLockBadRequests(f *testing.F) {
	for _, s := range []string{"42", "", "order-17", "%00", "a%2Fb", "..", "99999999999999999999", "\xff"} {
		f.Add(s)
	}
	reached := false
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached = true })
	var rejected error
	mw := middleware.Lock(advisory.New(nil), middleware.PathValue(fuzzNS, "id"),
		middleware.WithResponder(func(w http.ResponseWriter, r *http.Request, err error, retry time.Duration) {
			rejected = err
			middleware.DefaultResponder(w, r, err, retry)
		}))
	mux := http.NewServeMux()
	mux.Handle("/o/{id}", mw(next))
	f.Fuzz(func(t *testing.T, seg string) {
		reached, rejected = false, nil
		r := httptest.NewRequest(http.MethodGet, "/o/"+url.PathEscape(seg), nil)
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		if reached {
			t.Fatalf("segment %q reached the handler without a lock", seg)
		}
		switch w.Code {
		case http.StatusBadRequest:
			if !errors.Is(rejected, middleware.ErrBadKey) {
				t.Fatalf("400 for %q without ErrBadKey: %v", seg, rejected)
			}
		case http.StatusServiceUnavailable:
			if w.Header().Get("Retry-After") == "" {
				t.Fatalf("503 for %q without Retry-After", seg)
			}
			if !errors.Is(rejected, advisory.ErrNilDB) && !errors.Is(rejected, middleware.ErrUnavailable) {
				t.Fatalf("503 for %q: %v", seg, rejected)
			}
		case http.StatusNotFound, http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			if rejected != nil {
				t.Fatalf("status %d for %q, yet the middleware rejected: %v", w.Code, seg, rejected)
			}
		default:
			t.Fatalf("segment %q: status %d, body %q", seg, w.Code, w.Body.String())
		}
	})
}
