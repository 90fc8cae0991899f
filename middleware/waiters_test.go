package middleware_test

import (
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/middleware"
)

// TestWaitersCountOnlyWaits checks that MaxWaiters counts only requests that
// wait for a busy key: with MaxWaiters(1) and a pool of one connection, which
// the test holds, two requests both wait for the connection and are then
// answered as their key says (200 free, 409 busy in fail-fast mode), neither
// 503 "too many waiting".
func TestWaitersCountOnlyWaits(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		cases := []struct {
			name string
			opt  middleware.Option
			busy bool
			want int
		}{
			{"fail fast, free keys", middleware.FailFast(), false, http.StatusOK},
			{"fail fast, busy keys", middleware.FailFast(), true, http.StatusConflict},
			{"wait, free keys", middleware.WaitUpTo(20 * time.Second), false, http.StatusOK},
		}
		// Dedicated sessions, so that each request's wait shows as a wait
		// for the pool's connection (a multiplexed Locker's second request
		// would wait in memory for the session the first one opens).
		waitKinds := slices.Clone(kinds)
		waitKinds[0].build = func(e *env, keyFn middleware.KeyFunc, opts ...middleware.Option) func(http.Handler) http.Handler {
			return middleware.Lock(advisory.New(e.db, advisory.WithDedicatedSessions()), keyFn, opts...)
		}
		for ki, kind := range waitKinds {
			for ci, tc := range cases {
				t.Run(kind.name+"/"+tc.name, func(t *testing.T) {
					db := itest.OpenDSN(t, driver, e.dsn)
					db.SetMaxOpenConns(1)
					mw := kind.build(&env{db: db}, middleware.PathValue(orders, "id"), tc.opt, middleware.MaxWaiters(1))
					url, c := mount(t, mw, &reached{})
					ids := [2]int{100*ki + 10*ci + 1, 100*ki + 10*ci + 2}
					if tc.busy {
						for _, id := range ids {
							e.hold(t, orders.ID(int32(id)))
						}
					}

					ctx := timeout(t, 30*time.Second)
					conn, err := db.Conn(ctx) // the pool's only connection
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { conn.Close() }) // on failure: the requests end
					type answer struct {
						r   response
						err error
					}
					answers := make(chan answer, 2) // never blocks the senders
					for i, id := range ids {
						go func() {
							r, err := send(ctx, c, http.MethodPut, url+"/orders/"+strconv.Itoa(id))
							answers <- answer{r, err}
						}()
						waitFor(t, 10*time.Second, "request "+strconv.Itoa(i+1)+" to wait for the connection", func() bool {
							select {
							case a := <-answers:
								t.Fatalf("answered %+v (%v) while the pool's connection was taken; want a wait for it", a.r, a.err)
							default:
							}
							return db.Stats().WaitCount >= int64(i+1)
						})
					}
					conn.Close()
					for range ids {
						if a := <-answers; a.err != nil || a.r.status != tc.want {
							t.Fatalf("got %+v (%v), want %d", a.r, a.err, tc.want)
						}
					}
				})
			}
		}
	})
}
