package benchsuite

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
)

// BenchmarkSessionLockPaired measures the uncontended lock+unlock of
// BenchmarkSessionLock as pairs: every iteration runs one library
// lock+release and one of the driver's best raw form (the integer in the
// text for lib/pq, a parameter for pgx, on a connection pinned for the whole
// run), in turn first and second, and times each. Both forms then share every moment of the
// run, so load that drifts while the suite runs (this machine's samples
// vary by 20-40% from one to the next) weighs on both alike, and their ratio
// is far steadier than a ratio of separate runs. Metrics: library-ns/op and
// raw-ns/op (per pair), and ratio (raw time ÷ library time: the library's
// throughput relative to the raw form, as in the goals table). With 8
// connections, 8 goroutines each run pairs; the pool has 8 more connections
// for the library's leases.
func BenchmarkSessionLockPaired(b *testing.B) {
	eachDriver(b, func(b *testing.B, db *sql.DB) {
		raw := rawStyles[0] // raw-params
		if sqltext.StyleOf(db.Driver()) == sqltext.Inline {
			raw = rawStyles[1] // raw-inline
		}
		l := advisory.New(db)
		for _, conns := range []int{1, 8} {
			b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
				setPool(b, db, 2*conns)
				ctx := context.Background()
				var libNS, rawNS atomic.Int64
				libOp := func(r rng) error {
					k, _ := r.key()
					lease, err := l.Lock(ctx, k)
					if err != nil {
						return err
					}
					return lease.Release(ctx)
				}
				rawOp := func(c *sql.Conn, r rng) error {
					n := r.next()
					if err := raw.lock(ctx, c, "pg_advisory_lock", n); err != nil {
						return err
					}
					return raw.unlock(ctx, c, n)
				}
				// pair runs both, the library first on one call and second on
				// the next (first gets the other's leftovers: a warm cache,
				// a backend still being scheduled), and adds up their times.
				pair := func(c *sql.Conn, r rng, libFirst bool) error {
					var lib, rw time.Duration
					t0 := time.Now()
					if libFirst {
						if err := libOp(r); err != nil {
							return err
						}
						t1 := time.Now()
						if err := rawOp(c, r); err != nil {
							return err
						}
						lib, rw = t1.Sub(t0), time.Since(t1)
					} else {
						if err := rawOp(c, r); err != nil {
							return err
						}
						t1 := time.Now()
						if err := libOp(r); err != nil {
							return err
						}
						rw, lib = t1.Sub(t0), time.Since(t1)
					}
					libNS.Add(int64(lib))
					rawNS.Add(int64(rw))
					return nil
				}
				var warm atomic.Bool
				warmUp(b, db, conns, true, func(_ context.Context, c *sql.Conn, r rng) error {
					return pair(c, r, warm.Swap(!warm.Load()))
				})
				libNS.Store(0)
				rawNS.Store(0)
				b.ReportAllocs()
				if conns == 1 {
					c, err := db.Conn(ctx)
					if err != nil {
						b.Fatal(err)
					}
					defer func() { c.Close() }()
					r := newRNG()
					libFirst := true
					for i := 0; b.Loop(); i++ {
						if err := pair(c, r, libFirst); err != nil {
							b.Fatal(err)
						}
						libFirst = !libFirst
						if i%swapEvery == swapEvery-1 {
							if c, err = swapConn(ctx, db, c); err != nil {
								b.Fatal(err)
							}
						}
					}
				} else {
					b.SetParallelism(parallelism(conns))
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						c, err := db.Conn(ctx)
						if err != nil {
							b.Error(err)
							return
						}
						defer func() { c.Close() }()
						r := newRNG()
						libFirst := true
						for i := 0; pb.Next(); i++ {
							if err := pair(c, r, libFirst); err != nil {
								b.Error(err)
								return
							}
							libFirst = !libFirst
							if i%swapEvery == swapEvery-1 {
								if c, err = swapConn(ctx, db, c); err != nil {
									b.Error(err)
									return
								}
							}
						}
					})
				}
				lib, rw := float64(libNS.Load()), float64(rawNS.Load())
				b.ReportMetric(lib/float64(b.N), "library-ns/op")
				b.ReportMetric(rw/float64(b.N), "raw-ns/op")
				if lib > 0 {
					b.ReportMetric(rw/lib, "ratio")
				}
			})
		}
	})
}

// swapEvery is how many pairs the raw form runs on one pinned connection
// before it pins another (swapConn).
const swapEvery = 64

// swapConn pins the connection the library used last in place of c: it takes
// the pool's most recently returned connection before giving c back (the
// pool hands out the newest idle connection first). The two forms then
// take turns on the same backends, so that neither keeps a backend that
// happens to wake faster (where the server's processes and the client's
// threads run differs from one process to the next, and moved single-
// connection ratios by ±15%).
func swapConn(ctx context.Context, db *sql.DB, c *sql.Conn) (*sql.Conn, error) {
	nc, err := db.Conn(ctx)
	if err != nil {
		return c, err
	}
	c.Close()
	return nc, nil
}
