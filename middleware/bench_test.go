package middleware_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/middleware"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// nopWriter is a ResponseWriter that allocates nothing.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

// BenchmarkRequest measures one uncontended request through each middleware
// against the real server, next to the bare lock calls it makes, so that
// B/op minus the bare line is the middleware's own cost per request.
func BenchmarkRequest(b *testing.B) {
	for _, driver := range itest.Drivers {
		b.Run(driver, func(b *testing.B) {
			db := itest.Open(b, driver)
			ctx := context.Background()
			locker := advisory.New(db)
			keyFn := middleware.PathValue(orders, "id")
			req := httptest.NewRequest(http.MethodPut, "/orders/42", nil)
			req.SetPathValue("id", "42")
			w := &nopWriter{h: http.Header{}}
			noop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})

			b.Run("advisory.TryLock+Release", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					lease, err := locker.TryLock(ctx, orders.ID(42))
					if err != nil {
						b.Fatal(err)
					}
					_ = lease.Release(ctx)
				}
			})
			b.Run("Lock", func(b *testing.B) {
				h := middleware.Lock(locker, keyFn)(noop)
				b.ReportAllocs()
				for b.Loop() {
					h.ServeHTTP(w, req)
				}
			})
			b.Run("BeginTx+txlock.TryLock+Commit", func(b *testing.B) {
				opts := []txlock.Option{txlock.WithDriver(db.Driver()), txlock.WithTry()}
				b.ReportAllocs()
				for b.Loop() {
					tx, err := db.BeginTx(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					if err := txlock.Lock(ctx, tx, orders.ID(42), opts...); err != nil {
						b.Fatal(err)
					}
					if err := tx.Commit(); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("TxLock", func(b *testing.B) {
				h := middleware.TxLock(db, keyFn)(noop)
				b.ReportAllocs()
				for b.Loop() {
					h.ServeHTTP(w, req)
				}
			})
		})
	}
}
