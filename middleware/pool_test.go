package middleware_test

import (
	"context"
	"errors"
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

// TestBoundedPool runs the README's HTTP pattern over a pool of 10
// connections, where handlers hold a lock and take a connection of the same
// pool for their read-modify-write: with one connection pinned per lease,
// lock holders exhausted the pool and every request hung. PUT takes a
// session lock (Lock, WaitUpTo(2s)), POST a transaction lock (TxLock,
// fail-fast), both increment the order's value. No request may hang (each
// is given 30 s), no update may be lost, at least 60% must be answered 2xx,
// and no advisory lock may be left; with 64 clients over 20 ids, and with
// 200 clients on one id.
func TestBoundedPool(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		cases := []struct {
			name     string
			clients  int
			requests int
			ids      int
		}{
			{"64 clients over 20 ids", 64, 2000, 20},
			{"200 clients on one id", 200, 2000, 1},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := setup(t, driver)
				if _, err := e.db.Exec(`INSERT INTO orders (id) SELECT g FROM generate_series(11, 20) g`); err != nil {
					t.Fatal(err)
				}
				e.db.SetMaxOpenConns(10)
				e.db.SetMaxIdleConns(10)
				locker := advisory.New(e.db)
				byID := middleware.PathID(orders, "id")
				mux := http.NewServeMux()
				lock := middleware.Lock(locker, byID, middleware.WaitUpTo(2*time.Second))
				mux.Handle("PUT /orders/{id}", lock(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					id, _ := strconv.Atoi(r.PathValue("id"))
					if err := rmw(r.Context(), e.db, id); err != nil {
						http.Error(w, err.Error(), http.StatusInternalServerError)
						return
					}
					w.WriteHeader(http.StatusNoContent)
				})))
				txlock := middleware.TxLock(e.db, byID)
				mux.Handle("POST /orders/{id}", txlock(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					id, _ := strconv.Atoi(r.PathValue("id"))
					if err := rmw(r.Context(), middleware.Tx(r.Context()), id); err != nil {
						http.Error(w, err.Error(), http.StatusInternalServerError)
						return
					}
					w.WriteHeader(http.StatusNoContent)
				})))
				srv := serve(t, mux)
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: tc.clients}}
				t.Cleanup(client.CloseIdleConnections)

				var (
					next     atomic.Int64
					hung     atomic.Int64
					mu       sync.Mutex
					statuses = map[string]int{}
					okPerID  = make([]int, tc.ids+1)
					wg       sync.WaitGroup
				)
				start := time.Now()
				for range tc.clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							n := next.Add(1)
							if n > int64(tc.requests) {
								return
							}
							id := int(n%int64(tc.ids)) + 1
							method := http.MethodPut
							if n%4 == 0 {
								method = http.MethodPost
							}
							ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
							r, err := send(ctx, client, method, srv.URL+"/orders/"+strconv.Itoa(id))
							cancel()
							if errors.Is(err, context.DeadlineExceeded) {
								hung.Add(1)
								continue
							}
							if err != nil {
								t.Errorf("%s /orders/%d: %v", method, id, err)
								return
							}
							mu.Lock()
							statuses[method+" "+strconv.Itoa(r.status)]++
							if r.status >= 200 && r.status <= 299 {
								okPerID[id]++
							}
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				took := time.Since(start)

				ok, lost := 0, 0
				for id := 1; id <= tc.ids; id++ {
					ok += okPerID[id]
					lost += okPerID[id] - e.value(t, id)
				}
				testkit.WaitNoAdvisoryLocks(t, e.admin)
				t.Logf("%s, pool 10: %d of %d requests 2xx (%.1f%%) in %v; %d hung; %d updates lost; statuses %v",
					driver, ok, tc.requests, 100*float64(ok)/float64(tc.requests), took.Round(time.Millisecond),
					hung.Load(), lost, statuses)
				if h := hung.Load(); h > 0 {
					t.Errorf("%d requests got no answer within 30 s", h)
				}
				if ok*10 < tc.requests*6 {
					t.Errorf("%d of %d requests answered 2xx, want at least 60%%", ok, tc.requests)
				}
				if lost != 0 {
					t.Errorf("%d updates lost", lost)
				}
			})
		}
	})
}
