package benchsuite

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// hotGoroutines is how many goroutines of one process want the hot key.
const hotGoroutines = 64

var errOverlap = errors.New("benchsuite: two holders of the hot key at once")

// BenchmarkHotKey: 64 goroutines of one process lock and unlock ONE key as
// fast as they can (an empty critical section). ns/op is per lock+unlock.
//
//   - form=raw: each goroutine waits on its own pinned connection with
//     pg_advisory_lock, in the driver's fastest style.
//   - form=library: advisory.Locker as it is: each waiting goroutine holds a
//     pooled connection.
//   - form=library-queued: the keyqueue prototype (queued_test.go): waiters
//     queue in memory, the pool is limited to 2 connections.
//   - form=library-handoff8: the same, and a holder hands its lease straight
//     to the next waiter of the process, up to 8 times in a row.
//
// Metrics: conns is the peak number of connections in use at once;
// waiting-conns the peak number of goroutines waiting on the server with a
// connection of their own.
func BenchmarkHotKey(b *testing.B) {
	eachDriver(b, func(b *testing.B, db *sql.DB) {
		style := sqltext.StyleOf(db.Driver())
		raw := rawStyles[0]
		if style == sqltext.Inline {
			raw = rawStyles[1]
		}
		l := advisory.New(db)
		forms := []struct {
			name    string
			pool    int
			queued  bool
			handoff int
		}{
			{"raw", hotGoroutines, false, 0},
			{"library", hotGoroutines, false, 0},
			{"library-queued", 2, true, 0},
			{"library-handoff8", 2, true, 8},
		}
		for _, f := range forms {
			b.Run("form="+f.name, func(b *testing.B) {
				setPool(b, db, f.pool)
				ctx := context.Background()
				var (
					inUse, waiting maxGauge
					inCS           atomic.Int32
					fail           atomic.Value
				)
				hotN := newRNG().next()
				hot := keyspace.Int64(hotN)
				ql := &queuedLocker{l: l, handoffs: f.handoff, conns: &inUse, waiting: &waiting}
				critical := func() bool {
					ok := inCS.Add(1) == 1
					inCS.Add(-1)
					if !ok {
						fail.Store(errOverlap)
					}
					return ok
				}
				b.ReportAllocs()
				b.SetParallelism(parallelism(hotGoroutines))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					var c *sql.Conn
					if f.name == "raw" {
						var err error
						if c, err = db.Conn(ctx); err != nil {
							fail.Store(err)
							return
						}
						inUse.inc()
						defer func() { c.Close(); inUse.dec() }()
					}
					for pb.Next() {
						switch {
						case f.name == "raw":
							waiting.inc()
							err := raw.lock(ctx, c, "pg_advisory_lock", hotN)
							waiting.dec()
							if err == nil && critical() {
								err = raw.unlock(ctx, c, hotN)
							}
							if err != nil {
								fail.Store(err)
								return
							}
						case f.queued:
							x, err := ql.Lock(ctx, hot)
							if err != nil {
								fail.Store(err)
								return
							}
							critical()
							if err := x.Release(ctx); err != nil {
								fail.Store(err)
								return
							}
						default:
							waiting.inc()
							inUse.inc()
							lease, err := l.Lock(ctx, hot)
							waiting.dec()
							if err != nil {
								fail.Store(err)
								return
							}
							critical()
							err = lease.Release(ctx)
							inUse.dec()
							if err != nil {
								fail.Store(err)
								return
							}
						}
					}
				})
				if err, _ := fail.Load().(error); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(inUse.peak.Load()), "conns")
				b.ReportMetric(float64(waiting.peak.Load()), "waiting-conns")
			})
		}
	})
}
