package benchsuite

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// muxGoroutines is how many goroutines BenchmarkMultiplexed runs.
const muxGoroutines = 64

// BenchmarkMultiplexed: 64 goroutines, each locking and unlocking random
// keys of its own (uncontended); ns/op is the time per lock+unlock of the
// whole process, so its inverse is the throughput.
//
//   - conns=4/form=library: advisory.New(db, WithSessions(4)) over a pool of
//     4: the leases of the 64 goroutines share 4 multiplexed sessions,
//     whose tries and releases go to the server in batches.
//   - conns=4/form=raw: the driver's best raw form, 4 goroutines each on a
//     pinned connection: what 4 connections give one statement at a time.
//   - conns=4/form=raw-pooled: the best raw form, 64 goroutines taking one
//     of 4 pooled connections for each lock+unlock.
//   - conns=64/form=raw: the best raw form, 64 goroutines each on a pinned
//     connection of their own.
//
// Metric conns is the peak of connections in use.
func BenchmarkMultiplexed(b *testing.B) {
	eachDriver(b, func(b *testing.B, db *sql.DB) {
		best := bestStyle(db)
		cases := []struct {
			name       string
			conns      int
			goroutines int
			pin        bool
			op         op
		}{
			{"conns=4/form=library", 4, muxGoroutines, false, libraryOp(advisory.New(db, advisory.WithSessions(4), advisory.WithWaiting(1)))},
			{"conns=4/form=raw", 4, 4, true, best.lockUnlock},
			{"conns=4/form=raw-pooled", 4, muxGoroutines, false, pooledForm(db, best).op},
			{"conns=64/form=raw", muxGoroutines, muxGoroutines, true, best.lockUnlock},
		}
		for _, c := range cases {
			b.Run(c.name, func(b *testing.B) {
				setPool(b, db, c.conns)
				warmUp(b, db, c.goroutines, c.pin, c.op)
				peak, stop := sampleInUse(db)
				b.ReportAllocs()
				b.SetParallelism(parallelism(c.goroutines))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					ctx := context.Background()
					var conn *sql.Conn
					if c.pin {
						var err error
						if conn, err = db.Conn(ctx); err != nil {
							b.Error(err)
							return
						}
						defer conn.Close()
					}
					r := newRNG()
					for pb.Next() {
						if err := c.op(ctx, conn, r); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.StopTimer()
				stop()
				b.ReportMetric(float64(peak.Load()), "conns")
				if p := peak.Load(); p > int64(c.conns) {
					b.Errorf("%d connections in use, want at most %d", p, c.conns)
				}
			})
		}
	})
}

// manyLeases is how many independent leases BenchmarkManyLeases holds at
// once.
const manyLeases = 100_000

// BenchmarkManyLeases: one process takes 100,000 independent leases (one
// TryLock call each, from 64 goroutines), holds them all at once on at most
// 4 connections, and releases each on its own. It runs on a private server
// with max_locks_per_transaction raised to 1024 (the shared lock table holds
// max_locks_per_transaction x max_connections entries: 100,000 locks need
// more than the default 64 x 100). Metrics: acquire-ms and release-ms for
// the whole set, heap-B/lease (the client's live heap while all are held,
// less the heap before, per lease) and conns (peak connections in use).
func BenchmarkManyLeases(b *testing.B) {
	srv := itest.NewServer(b, itest.Config{Settings: map[string]string{"max_locks_per_transaction": "1024"}})
	for _, d := range itest.Drivers {
		b.Run("driver="+d+"/form=library", func(b *testing.B) {
			dsn := srv.NewDatabase(b)
			db := itest.OpenDSN(b, d, dsn)
			setPool(b, db, 4)
			r := newRNG()
			ns := make([]int64, 0, manyLeases+manyLeases/100)
			for len(ns) < manyLeases {
				for range manyLeases - len(ns) {
					ns = append(ns, r.next())
				}
				slices.Sort(ns)
				ns = slices.Compact(ns)
			}
			keys := make([]keyspace.Key, manyLeases)
			for i, n := range ns {
				keys[i] = keyspace.Int64(n)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			var acquire, release time.Duration
			var heap float64
			peak, stop := sampleInUse(db)
			b.ReportAllocs()
			for b.Loop() {
				l := advisory.New(db, advisory.WithSessions(4), advisory.WithWaiting(1))
				leases := make([]*advisory.Lease, manyLeases)
				before := liveHeap()
				start := time.Now()
				if err := each(ctx, manyLeases, func(i int) error {
					lease, err := l.TryLock(ctx, keys[i])
					leases[i] = lease
					return err
				}); err != nil {
					b.Fatal(short(err))
				}
				acquire += time.Since(start)
				heap += float64(liveHeap()-before) / manyLeases
				start = time.Now()
				if err := each(ctx, manyLeases, func(i int) error { return leases[i].Release(ctx) }); err != nil {
					b.Fatal(short(err))
				}
				release += time.Since(start)
				runtime.KeepAlive(leases)
			}
			stop()
			n := float64(b.N)
			b.ReportMetric(float64(acquire.Milliseconds())/n, "acquire-ms")
			b.ReportMetric(float64(release.Milliseconds())/n, "release-ms")
			b.ReportMetric(heap/n, "heap-B/lease")
			b.ReportMetric(float64(peak.Load()), "conns")
			if p := peak.Load(); p > 4 {
				b.Errorf("%d connections in use, want at most 4", p)
			}
		})
	}
}

// manyGoroutines is how many goroutines BenchmarkManyLeases acquires and
// releases with. PostgreSQL scans all the locks a backend holds at the end
// of every statement (0.1-0.3 us a lock here: about 25 ms a statement with
// 100,000 held), so the time to take n locks over a few sessions grows with
// n squared over the batch size, which is the number of callers at once
// over the number of sessions. More callers make bigger batches, but a batch
// must also answer within the keepalive bound (900 ms by default, beyond
// which its session counts as lost): 1,024 callers (batches of about 256
// keys) overran it on a loaded machine.
const manyGoroutines = 64

// each runs fn(0..n-1) on manyGoroutines goroutines and returns the first
// error.
func each(ctx context.Context, n int, fn func(i int) error) error {
	g, _ := errgroup.WithContext(ctx)
	g.SetLimit(manyGoroutines)
	const chunk = 256
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		g.Go(func() error {
			for i := lo; i < hi; i++ {
				if err := fn(i); err != nil {
					return fmt.Errorf("%d: %w", i, err)
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// liveHeap returns the bytes of live heap after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
