package middleware_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/middleware"
)

var tenants = keyspace.MustNamespace("middleware-test-tenants", 7002)

func byTenant(r *http.Request) (string, error) { return r.Header.Get("X-Tenant"), nil }

func tenantReq(tenant string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/exports", nil)
	if tenant != "" {
		r.Header.Set("X-Tenant", tenant)
	}
	return r
}

func TestLimit(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		release := make(chan struct{})
		entered := make(chan struct{}, 16)
		var running, peak atomic.Int64
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if middleware.Slot(r.Context()) == nil {
				t.Error("no slot in the request context")
			}
			n := running.Add(1)
			for m := peak.Load(); n > m && !peak.CompareAndSwap(m, n); m = peak.Load() {
			}
			entered <- struct{}{}
			<-release
			running.Add(-1)
			w.WriteHeader(http.StatusNoContent)
		})
		// Two processes: two Lockers over pools of their own.
		a := middleware.Limit(advisory.New(e.db), tenants, byTenant, 2)(h)
		b := middleware.Limit(advisory.New(e.admin), tenants, byTenant, 2, middleware.WaitUpTo(10*time.Second))(h)

		var wg sync.WaitGroup
		serve := func(hd http.Handler, tenant string) *httptest.ResponseRecorder {
			w := httptest.NewRecorder()
			hd.ServeHTTP(w, tenantReq(tenant))
			return w
		}
		codes := make(chan int, 8)
		for _, hd := range []http.Handler{a, b} {
			wg.Add(1)
			go func() { defer wg.Done(); codes <- serve(hd, "t1").Code }()
		}
		<-entered
		<-entered
		// t1 has 2 running: a third is refused at once with 429 and Retry-After.
		w := serve(a, "t1")
		if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
			t.Fatalf("third request of t1: %d %q, want 429 with Retry-After", w.Code, w.Header().Get("Retry-After"))
		}
		// Another tenant is not limited by t1.
		wg.Add(1)
		go func() { defer wg.Done(); codes <- serve(a, "t2").Code }()
		<-entered
		// A waiting request (WaitUpTo) gets in once one finishes.
		wg.Add(1)
		go func() { defer wg.Done(); codes <- serve(b, "t1").Code }()
		time.Sleep(100 * time.Millisecond)
		if got := running.Load(); got != 3 {
			t.Fatalf("%d running, want 3 (2 of t1, 1 of t2)", got)
		}
		release <- struct{}{}
		<-entered
		close(release)
		wg.Wait()
		close(codes)
		for c := range codes {
			if c != http.StatusNoContent {
				t.Errorf("status %d", c)
			}
		}
		if peak.Load() != 3 {
			t.Errorf("peak %d running, want 3", peak.Load())
		}
		// No tenant: 400, before any round trip.
		if w := serve(a, ""); w.Code != http.StatusBadRequest {
			t.Fatalf("no tenant: %d", w.Code)
		}
	})
}

// parked returns a handler that reports each request entering it on
// entered (buffered for n) and holds it until release is closed.
func parked(n int) (h http.Handler, entered, release chan struct{}) {
	entered, release = make(chan struct{}, n), make(chan struct{})
	h = http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		entered <- struct{}{}
		<-release
	})
	return h, entered, release
}

func TestLimitWaitRunsOut(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		h, entered, release := parked(1)
		var rejected error
		lim := middleware.Limit(advisory.New(e.db), tenants, byTenant, 1, middleware.WaitUpTo(200*time.Millisecond),
			middleware.WithHooks(middleware.Hooks{Rejected: func(_ *http.Request, _ keyspace.Key, err error) { rejected = err }}))(h)
		done := make(chan struct{})
		go func() { defer close(done); lim.ServeHTTP(httptest.NewRecorder(), tenantReq("t")) }()
		<-entered
		w := httptest.NewRecorder()
		lim.ServeHTTP(w, tenantReq("t"))
		if w.Code != http.StatusTooManyRequests || !errors.Is(rejected, middleware.ErrLimited) {
			t.Fatalf("after the wait: %d %v, want 429 ErrLimited", w.Code, rejected)
		}
		close(release)
		<-done
	})
}

// TestLimitMaxWaiters: with one request of a tenant running and MaxWaiters
// requests of it waiting, the next is answered 503 with Retry-After
// (ErrTooManyWaiters) at once; the waiter then gets the slot.
func TestLimitMaxWaiters(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		h, entered, release := parked(2)
		waiting := make(chan struct{}, 1)
		var mu sync.Mutex
		var rejected error
		lim := middleware.Limit(advisory.New(e.db), tenants, byTenant, 1,
			middleware.WaitUpTo(30*time.Second), middleware.MaxWaiters(1),
			middleware.WithHooks(middleware.Hooks{
				Waiting: func(*http.Request, keyspace.Key) { waiting <- struct{}{} },
				Rejected: func(_ *http.Request, _ keyspace.Key, err error) {
					mu.Lock()
					rejected = err
					mu.Unlock()
				},
			}))(h)
		codes := make(chan int, 2)
		serve := func() {
			w := httptest.NewRecorder()
			lim.ServeHTTP(w, tenantReq("t"))
			codes <- w.Code
		}
		go serve()
		<-entered // the first runs
		go serve()
		<-waiting // the second waits
		w := httptest.NewRecorder()
		lim.ServeHTTP(w, tenantReq("t"))
		mu.Lock()
		err := rejected
		mu.Unlock()
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || !errors.Is(err, middleware.ErrTooManyWaiters) {
			t.Fatalf("third request: %d %q %v, want 503 with Retry-After, ErrTooManyWaiters", w.Code, w.Header().Get("Retry-After"), err)
		}
		close(release)
		for range 2 {
			if c := <-codes; c != http.StatusOK {
				t.Fatalf("a request that ran or waited: %d, want 200", c)
			}
		}
	})
}

func TestLimitBadConfig(t *testing.T) {
	l := advisory.New(nil)
	for name, f := range map[string]func(){
		"nil locker": func() { middleware.Limit(nil, tenants, byTenant, 1) },
		"nil name":   func() { middleware.Limit(l, tenants, nil, 1) },
		"n 0":        func() { middleware.Limit(l, tenants, byTenant, 0) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}
