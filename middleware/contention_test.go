package middleware_test

import (
	"database/sql"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/middleware"
)

// kinds are the two HTTP middlewares, built over a test's env.
var kinds = []struct {
	name  string
	build func(e *env, keyFn middleware.KeyFunc, opts ...middleware.Option) func(http.Handler) http.Handler
}{
	{"Lock", func(e *env, keyFn middleware.KeyFunc, opts ...middleware.Option) func(http.Handler) http.Handler {
		return middleware.Lock(advisory.New(e.db), keyFn, opts...)
	}},
	{"TxLock", func(e *env, keyFn middleware.KeyFunc, opts ...middleware.Option) func(http.Handler) http.Handler {
		return middleware.TxLock(e.db, keyFn, opts...)
	}},
}

// reached is a handler that counts its calls and answers "ok".
type reached struct{ n atomic.Int64 }

func (h *reached) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.n.Add(1)
	_, _ = w.Write([]byte("ok"))
}

// mount serves mw(h) at "/orders/{id}" and returns the server's URL.
func mount(t *testing.T, mw func(http.Handler) http.Handler, h http.Handler) (string, *http.Client) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/orders/{id}", mw(h))
	srv := serve(t, mux)
	return srv.URL, srv.Client()
}

// TestContention checks the answers of both middlewares when the key is
// held elsewhere: fail fast, wait and win, wait and time out, the waiter
// cap, and bad ids.
func TestContention(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		keyFn := middleware.PathValue(orders, "id")
		for ki, kind := range kinds {
			// Each kind works on ids of its own: 1..9 for Lock, 11..19 for TxLock.
			p := func(n int) string { return "/orders/" + strconv.Itoa(n+10*ki) }
			id := func(n int) keyspace.Key { return orders.ID(int32(n + 10*ki)) }
			t.Run(kind.name, func(t *testing.T) {

				t.Run("fail fast", func(t *testing.T) {
					h := &reached{}
					url, c := mount(t, kind.build(e, keyFn, middleware.RetryAfter(2500*time.Millisecond)), h)
					release := e.hold(t, id(1))
					start := time.Now()
					r := do(t, c, http.MethodPut, url+p(1))
					took := time.Since(start)
					if r.status != http.StatusConflict || r.retryAfter != "3" || !strings.Contains(r.body, "locked") {
						t.Fatalf("held key: got %+v, want 409, Retry-After 3, a body that says locked", r)
					}
					if h.n.Load() != 0 {
						t.Fatal("the handler ran without the lock")
					}
					t.Logf("409 after %v", took.Round(time.Microsecond))
					if r := do(t, c, http.MethodPut, url+p(2)); r.status != http.StatusOK {
						t.Fatalf("free key: got %+v, want 200", r)
					}
					release()
					if r := do(t, c, http.MethodPut, url+p(1)); r.status != http.StatusOK {
						t.Fatalf("released key: got %+v, want 200", r)
					}
				})

				t.Run("wait succeeds", func(t *testing.T) {
					acquired := make(chan time.Duration, 1)
					url, c := mount(t, kind.build(e, keyFn, middleware.WaitUpTo(20*time.Second),
						middleware.WithHooks(middleware.Hooks{Acquired: func(r *http.Request, key keyspace.Key, waited time.Duration) {
							acquired <- waited
						}})), &reached{})
					key := id(3)
					release := e.hold(t, key)
					got := make(chan response, 1)
					start := time.Now()
					go func() {
						r, _ := send(timeout(t, 30*time.Second), c, http.MethodPut, url+p(3))
						got <- r
					}()
					waitFor(t, 10*time.Second, "the request to wait for the lock", func() bool { return e.waiting(t, key) == 1 })
					// Hold on a little: the wait then dwarfs the time the
					// request took to reach the handler, which the hook
					// does not count.
					time.Sleep(50 * time.Millisecond)
					waited := time.Since(start)
					release()
					r := <-got
					if r.status != http.StatusOK {
						t.Fatalf("got %+v, want 200 after the release", r)
					}
					if w := <-acquired; w < waited/2 {
						t.Fatalf("Acquired hook says waited %v; the request waited at least %v", w, waited)
					}
					t.Logf("waited %v, answered %v after the release", waited.Round(time.Millisecond),
						(time.Since(start) - waited).Round(time.Millisecond))
				})

				t.Run("wait times out", func(t *testing.T) {
					const bound = 300 * time.Millisecond
					url, c := mount(t, kind.build(e, keyFn, middleware.WaitUpTo(bound)), &reached{})
					e.hold(t, id(4))
					start := time.Now()
					r := do(t, c, http.MethodPut, url+p(4))
					took := time.Since(start)
					if r.status != http.StatusServiceUnavailable || r.retryAfter != "1" || !strings.Contains(r.body, "timed out") {
						t.Fatalf("got %+v, want 503, Retry-After 1, a body that says timed out", r)
					}
					if took < bound || took > bound+5*time.Second {
						t.Fatalf("answered after %v, want about %v", took, bound)
					}
					t.Logf("503 after %v (bound %v)", took.Round(time.Millisecond), bound)
				})

				t.Run("waiter cap", func(t *testing.T) {
					// MaxWaiters(2): two requests wait for key 5, a third for
					// key 5 is turned away at once; a request for another
					// busy key, 8, still waits (the cap is per key), and one
					// for a free key, 6, never meets the cap.
					waiting := make(chan keyspace.Key, 4)
					url, c := mount(t, kind.build(e, keyFn, middleware.WaitUpTo(20*time.Second), middleware.MaxWaiters(2),
						middleware.WithHooks(middleware.Hooks{Waiting: func(r *http.Request, key keyspace.Key) { waiting <- key }})), &reached{})
					release5, release8 := e.hold(t, id(5)), e.hold(t, id(8))
					var wg sync.WaitGroup
					statuses := make(chan int, 3)
					for _, n := range []int{5, 5, 8} {
						wg.Add(1)
						go func() {
							defer wg.Done()
							r, _ := send(timeout(t, 30*time.Second), c, http.MethodPut, url+p(n))
							statuses <- r.status
						}()
					}
					got := map[keyspace.Key]int{}
					for range 3 {
						select {
						case k := <-waiting:
							got[k]++
						case <-time.After(10 * time.Second):
							t.Fatalf("waiting requests: %v, want 2 for key 5 and 1 for key 8", got)
						}
					}
					if got[id(5)] != 2 || got[id(8)] != 1 {
						t.Fatalf("waiting requests: %v, want 2 for key 5 and 1 for key 8", got)
					}
					start := time.Now()
					r := do(t, c, http.MethodPut, url+p(5))
					took := time.Since(start)
					if r.status != http.StatusServiceUnavailable || r.retryAfter == "" || !strings.Contains(r.body, "too many") {
						t.Fatalf("third request for key 5: got %+v, want 503 with Retry-After, a body that says too many", r)
					}
					t.Logf("third request for key 5 answered 503 after %v", took.Round(time.Microsecond))
					if r := do(t, c, http.MethodPut, url+p(6)); r.status != http.StatusOK {
						t.Fatalf("free key while others wait: got %+v, want 200", r)
					}
					release5()
					release8()
					wg.Wait()
					close(statuses)
					for s := range statuses {
						if s != http.StatusOK {
							t.Fatalf("a waiter got %d, want 200", s)
						}
					}
				})

				t.Run("bad id", func(t *testing.T) {
					h := &reached{}
					var rejected []error
					var mu sync.Mutex
					hooks := middleware.WithHooks(middleware.Hooks{Rejected: func(r *http.Request, key keyspace.Key, err error) {
						mu.Lock()
						rejected = append(rejected, err)
						mu.Unlock()
					}})
					mux := http.NewServeMux()
					mux.Handle("/rest/{id...}", kind.build(e, keyFn, hooks)(h))
					mux.Handle("/wrong/{id}", kind.build(e, middleware.PathValue(orders, "nope"), hooks)(h))
					mux.Handle("/custom/{id}", kind.build(e, func(r *http.Request) (keyspace.Key, error) {
						return keyspace.Key{}, errors.New("secret internal detail")
					}, hooks)(h))
					srv := serve(t, mux)
					for _, path := range []string{"/rest/", "/wrong/1", "/custom/1"} {
						r := do(t, srv.Client(), http.MethodPut, srv.URL+path)
						if r.status != http.StatusBadRequest || strings.Contains(r.body, "secret") {
							t.Fatalf("%s: got %+v, want 400 without the cause", path, r)
						}
					}
					if h.n.Load() != 0 {
						t.Fatal("the handler ran for a bad id")
					}
					for _, err := range rejected {
						if !errors.Is(err, middleware.ErrBadKey) {
							t.Fatalf("Rejected hook got %v, want ErrBadKey", err)
						}
					}
					if len(rejected) != 3 {
						t.Fatalf("Rejected hook ran %d times, want 3", len(rejected))
					}
				})

				t.Run("shared for safe methods", func(t *testing.T) {
					in := make(chan struct{}, 2)
					leave := make(chan struct{})
					h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						if r.Method == http.MethodGet {
							in <- struct{}{}
							select {
							case <-leave:
							case <-r.Context().Done():
							}
						}
					})
					url, c := mount(t, kind.build(e, keyFn, middleware.SharedForSafeMethods()), h)
					var wg sync.WaitGroup
					statuses := make(chan int, 2)
					for range 2 {
						wg.Add(1)
						go func() {
							defer wg.Done()
							r, _ := send(timeout(t, 30*time.Second), c, http.MethodGet, url+p(7))
							statuses <- r.status
						}()
					}
					for range 2 { // both readers inside at once
						select {
						case <-in:
						case <-time.After(10 * time.Second):
							t.Fatal("two GETs did not hold the shared lock together")
						}
					}
					if r := do(t, c, http.MethodPut, url+p(7)); r.status != http.StatusConflict {
						t.Fatalf("PUT while readers hold the key: got %+v, want 409", r)
					}
					close(leave)
					wg.Wait()
					close(statuses)
					for s := range statuses {
						if s != http.StatusOK {
							t.Fatalf("a GET got %d, want 200", s)
						}
					}
					if r := do(t, c, http.MethodPut, url+p(7)); r.status != http.StatusOK {
						t.Fatalf("PUT after the readers: got %+v, want 200", r)
					}
				})
			})
		}
	})
}

// TestDatabaseDown checks that a failure to lock (nothing listens where the
// pool points) is a 503 with Retry-After that names no internals, and that the
// Rejected hook gets ErrUnavailable with the cause.
func TestDatabaseDown(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		for _, kind := range kinds {
			t.Run(kind.name, func(t *testing.T) {
				t.Cleanup(func() { testkit.VerifyNone(t) })
				dead, err := sql.Open(driver, "postgres://nobody@127.0.0.1:1/nowhere?sslmode=disable&connect_timeout=2")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { dead.Close() })
				var rejected error
				h := &reached{}
				mw := kind.build(&env{db: dead}, middleware.PathValue(orders, "id"),
					middleware.WaitUpTo(5*time.Second),
					middleware.WithHooks(middleware.Hooks{Rejected: func(r *http.Request, key keyspace.Key, err error) { rejected = err }}))
				url, c := mount(t, mw, h)
				r := do(t, c, http.MethodPut, url+"/orders/1")
				if r.status != http.StatusServiceUnavailable || r.retryAfter == "" ||
					strings.Contains(r.body, "127.0.0.1") || strings.Contains(r.body, "dial") || strings.Contains(r.body, "refused") {
					t.Fatalf("got %+v, want 503 with Retry-After and no internals", r)
				}
				if !errors.Is(rejected, middleware.ErrUnavailable) || h.n.Load() != 0 {
					t.Fatalf("Rejected hook got %v (handler ran %d times), want ErrUnavailable", rejected, h.n.Load())
				}
				t.Logf("body %q; hook error %v", r.body, rejected)
			})
		}
	})
}
