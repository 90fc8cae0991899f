package benchsuite

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// hotGoroutines is how many goroutines of one process want the hot key.
const hotGoroutines = 64

var errOverlap = errors.New("benchsuite: two holders of the hot key at once")

// BenchmarkHotKey: 64 goroutines of one process lock and unlock ONE key as
// fast as they can (an empty critical section). ns/op is per lock+unlock.
// Every form has a pool of 64 connections.
//
//   - form=raw: each goroutine waits on its own pinned connection with
//     pg_advisory_lock, in the driver's fastest style.
//   - form=library: advisory.Locker as it is (its per-process queue, and
//     handoffs of the held lock to the next local waiter with the default
//     budget).
//   - form=library-nohandoff: the same with WithHandoff(0, 0): the queue
//     only, every Release unlocks on the server.
//
// Metrics: conns is the peak number of connections in use at once (sampled
// from db.Stats every 100 µs); waiting-conns is conns minus the holder's.
func BenchmarkHotKey(b *testing.B) {
	eachDriver(b, func(b *testing.B, db *sql.DB) {
		raw := bestStyle(db)
		forms := []struct {
			name string
			l    *advisory.Locker
		}{
			{"raw", nil},
			{"library", advisory.New(db)},
			{"library-nohandoff", advisory.New(db, advisory.WithHandoff(0, 0))},
		}
		for _, f := range forms {
			b.Run("form="+f.name, func(b *testing.B) {
				setPool(b, db, hotGoroutines)
				ctx := context.Background()
				var (
					inCS atomic.Int32
					fail atomic.Value
				)
				hotN := newRNG().next()
				hot := keyspace.Int64(hotN)
				critical := func() {
					if inCS.Add(1) != 1 {
						fail.Store(errOverlap)
					}
					inCS.Add(-1)
				}
				peak, stop := sampleInUse(db)
				b.ReportAllocs()
				b.SetParallelism(parallelism(hotGoroutines))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					var c *sql.Conn
					if f.l == nil {
						var err error
						if c, err = db.Conn(ctx); err != nil {
							fail.Store(err)
							return
						}
						defer c.Close()
					}
					for pb.Next() {
						if f.l == nil {
							err := raw.lock(ctx, c, "pg_advisory_lock", hotN)
							if err == nil {
								critical()
								err = raw.unlock(ctx, c, hotN)
							}
							if err != nil {
								fail.Store(err)
								return
							}
							continue
						}
						lease, err := f.l.Lock(ctx, hot)
						if err != nil {
							fail.Store(err)
							return
						}
						critical()
						if err := lease.Release(ctx); err != nil {
							fail.Store(err)
							return
						}
					}
				})
				b.StopTimer()
				stop()
				if err, _ := fail.Load().(error); err != nil {
					b.Fatal(err)
				}
				conns := peak.Load()
				b.ReportMetric(float64(conns), "conns")
				b.ReportMetric(float64(max(conns-1, 0)), "waiting-conns")
			})
		}
	})
}

// sampleInUse polls db.Stats().InUse every 100 µs and keeps the peak until
// stop is called.
func sampleInUse(db *sql.DB) (*atomic.Int64, func()) {
	var peak atomic.Int64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Microsecond)
		defer t.Stop()
		for {
			if n := int64(db.Stats().InUse); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return &peak, func() { close(done); <-finished }
}
