package middleware_test

import (
	"context"
	"database/sql"
	"net/http"
	"strconv"
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

const (
	loadClients  = 64
	loadIDs      = 20
	loadRequests = 2000
)

// TestReadmeDefaultsUnderLoad runs the README's HTTP setup (Lock with
// WaitUpTo(2s) on PUT, MaxWaiters left at its default, the pool sized as the
// README says) under 64 concurrent clients sending 2,000 PUTs over 20 ids,
// each a read-modify-write of its order's row through the application's one
// *sql.DB. Each PUT is sent once (no retries): at least 90% must be answered
// 2xx, no update may be lost, and no advisory lock may be left.
func TestReadmeDefaultsUnderLoad(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		cases := []struct {
			name string
			// extra is how many connections of the pool a handler takes
			// besides its lease.
			extra int
			rmw   func(ctx context.Context, db *sql.DB, id int) error
		}{
			{"write through Lease.Tx", 0, func(ctx context.Context, db *sql.DB, id int) error {
				return middleware.Lease(ctx).Tx(ctx, func(tx *sql.Tx) error { return rmw(ctx, tx, id) })
			}},
			{"write through the pool", 1, func(ctx context.Context, db *sql.DB, id int) error {
				return rmw(ctx, db, id)
			}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := setup(t, driver)
				if _, err := e.db.Exec(`INSERT INTO orders (id) SELECT g FROM generate_series(11, $1) g`, loadIDs); err != nil {
					t.Fatal(err)
				}
				// As the README says, for n ids worked on at once: 2n
				// (a lease and at most one waiter on the server per id),
				// plus n per connection a handler takes besides its lease.
				pool := loadIDs * (2 + tc.extra)
				e.db.SetMaxOpenConns(pool)
				e.db.SetMaxIdleConns(pool)

				var waited atomic.Int64 // requests that found their id busy and waited
				lock := middleware.Lock(advisory.New(e.db), middleware.PathID(orders, "id"), middleware.WaitUpTo(2*time.Second),
					middleware.WithHooks(middleware.Hooks{Waiting: func(*http.Request, keyspace.Key) { waited.Add(1) }}))
				mux := http.NewServeMux()
				mux.Handle("PUT /orders/{id}", lock(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					id, _ := strconv.Atoi(r.PathValue("id"))
					if err := tc.rmw(r.Context(), e.db, id); err != nil {
						http.Error(w, err.Error(), http.StatusInternalServerError)
						return
					}
					w.WriteHeader(http.StatusNoContent)
				})))
				srv := serve(t, mux)
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: loadClients}}
				t.Cleanup(client.CloseIdleConnections)

				ctx := timeout(t, 5*time.Minute)
				var (
					next     atomic.Int64
					mu       sync.Mutex
					statuses = map[int]int{}
					bodies   = map[string]int{}
					okPerID  [loadIDs + 1]int
					wg       sync.WaitGroup
				)
				start := time.Now()
				for range loadClients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							n := next.Add(1)
							if n > loadRequests {
								return
							}
							id := int(n%loadIDs) + 1
							r, err := send(ctx, client, http.MethodPut, srv.URL+"/orders/"+strconv.Itoa(id))
							if err != nil {
								t.Errorf("PUT /orders/%d: %v", id, err)
								return
							}
							mu.Lock()
							statuses[r.status]++
							if r.status < 200 || r.status > 299 {
								bodies[r.body]++
							} else {
								okPerID[id]++
							}
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				took := time.Since(start)

				ok, lost := 0, 0
				for id := 1; id <= loadIDs; id++ {
					ok += okPerID[id]
					lost += okPerID[id] - e.value(t, id)
				}
				testkit.WaitNoAdvisoryLocks(t, e.admin)
				locks, err := testkit.AdvisoryLocks(timeout(t, 10*time.Second), e.admin)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s, pool %d: %d of %d PUTs 2xx (%.1f%%) in %v, %d of them waited for a busy id; %d updates lost; %d advisory locks left; statuses %v; refusals %v",
					driver, pool, ok, loadRequests, 100*float64(ok)/loadRequests, took.Round(time.Millisecond),
					waited.Load(), lost, len(locks), statuses, bodies)
				if ok*10 < loadRequests*9 {
					t.Errorf("%d of %d PUTs answered 2xx, want at least 90%%", ok, loadRequests)
				}
				if lost != 0 {
					t.Errorf("%d updates lost", lost)
				}
			})
		}
	})
}

// rmw is a read-modify-write of order id's value: read it, write it plus one
// (increment without its pause: this test is about the answers, and the
// pause would only make it slower).
func rmw(ctx context.Context, q querier, id int) error {
	var v int
	if err := q.QueryRowContext(ctx, `SELECT value FROM orders WHERE id = $1`, id).Scan(&v); err != nil {
		return err
	}
	_, err := q.ExecContext(ctx, `UPDATE orders SET value = $1 WHERE id = $2`, v+1, id)
	return err
}
