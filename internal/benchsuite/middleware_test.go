package benchsuite

import (
	"context"
	"database/sql"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/middleware"
)

var orders = keyspace.MustNamespace("benchsuite-orders", 0x6265)

// okHandler is the bare handler: it answers "ok" and does nothing else.
var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	_, _ = w.Write([]byte("ok"))
})

// middlewareForms are the ways a request reaches okHandler: bare, or through
// one of the middlewares over db.
func middlewareForms(db *sql.DB) []struct {
	name string
	mw   func(http.Handler) http.Handler
} {
	l := advisory.New(db)
	key := middleware.PathValue(orders, "id")
	return []struct {
		name string
		mw   func(http.Handler) http.Handler
	}{
		{"bare", func(h http.Handler) http.Handler { return h }},
		{"library-lock", middleware.Lock(l, key)},
		{"library-lock-wait", middleware.Lock(l, key, middleware.WaitUpTo(5*time.Second))},
		{"library-txlock", middleware.TxLock(db, key)},
	}
}

// serve runs one PUT /orders/{id} through mux in memory and checks the answer.
func serve(mux http.Handler, id int) (int, string) {
	req := httptest.NewRequest(http.MethodPut, "/orders/"+strconv.Itoa(id), nil)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// BenchmarkMiddleware: one request through the HTTP middleware against the
// bare handler, in memory (httptest), one at a time, with random ids.
// Metric stmts/op is the number of statements the request sent to the
// server (a counting driver wrapper); B/op and allocs/op include the driver's
// work. form=bare is the baseline: its B/op is what the request costs
// without any lock.
func BenchmarkMiddleware(b *testing.B) {
	for _, d := range itest.Drivers {
		b.Run("driver="+d, func(b *testing.B) {
			dsn := itest.DSN(b)
			db, count := openCounting(b, d, dsn)
			admin := itest.OpenDSN(b, "postgres", dsn)
			setPool(b, db, 8)
			for _, f := range middlewareForms(db) {
				b.Run("form="+f.name, func(b *testing.B) {
					mux := http.NewServeMux()
					mux.Handle("PUT /orders/{id}", f.mw(okHandler))
					r := newRNG()
					before := count.Load()
					b.ReportAllocs()
					for b.Loop() {
						if code, body := serve(mux, int(uint32(r.next())>>1)); code != http.StatusOK {
							b.Fatalf("status %d: %s", code, body)
						}
					}
					b.ReportMetric(float64(count.Load()-before)/float64(b.N), "stmts/op")
				})
			}
			testkit.WaitConnsIdle(b, db)
			testkit.WaitNoAdvisoryLocks(b, admin)
		})
	}
}

// TestMiddlewareRoundTrips counts the statements one request sends through
// each middleware: a session lock is one lock and one unlock; a transaction
// lock is BEGIN, the lock, COMMIT (the lock is the only statement the
// middleware adds to a transaction the handler gets to use).
func TestMiddlewareRoundTrips(t *testing.T) {
	want := map[string]int64{"bare": 0, "library-lock": 2, "library-lock-wait": 2, "library-txlock": 3}
	itest.EachDriver(t, func(t *testing.T, driver string) {
		dsn := itest.DSN(t)
		db, count := openCounting(t, driver, dsn)
		admin := itest.OpenDSN(t, "postgres", dsn)
		if err := db.PingContext(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, f := range middlewareForms(db) {
			mux := http.NewServeMux()
			mux.Handle("PUT /orders/{id}", f.mw(okHandler))
			for i := range 3 { // the first request may open the connection
				before := count.Load()
				if code, body := serve(mux, 1000+i); code != http.StatusOK {
					t.Fatalf("%s: status %d: %s", f.name, code, body)
				}
				if got := count.Load() - before; i > 0 && got != want[f.name] {
					t.Errorf("%s: %d statements for one request, want %d", f.name, got, want[f.name])
				}
			}
		}
		testkit.WaitConnsIdle(t, db)
		testkit.WaitNoAdvisoryLocks(t, admin)
	})
}
