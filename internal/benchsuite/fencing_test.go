package benchsuite

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// durableSettings are a production server's: itest's defaults turn fsync
// and synchronous_commit off, which would hide what a token costs when its
// bump must reach the disk.
var durableSettings = map[string]string{
	"fsync":              "on",
	"synchronous_commit": "on",
	"full_page_writes":   "on",
}

// fenceKeys is the bounded set of keys the fencing benchmark draws from
// (tokens come from one sequence for all keys, so the set's size does not
// change what a token costs; it keeps the keys of BenchmarkFencing as they
// were when every key had a counter row).
const fenceKeys = 1000

// fenceKeyer hands each goroutine (each rng) a slice of its own of the key
// set, so that two goroutines never wait for each other's key: the
// benchmark measures the token, not contention.
type fenceKeyer struct {
	parts int
	next  atomic.Int64
	own   sync.Map // the rng's *rand.Rand -> int64, the goroutine's slice
}

func (f *fenceKeyer) key(r rng) keyspace.Key {
	v, ok := f.own.Load(r.r)
	if !ok {
		v, _ = f.own.LoadOrStore(r.r, f.next.Add(1)-1)
	}
	part := v.(int64) % int64(f.parts)
	per := int64(fenceKeys / f.parts)
	return keyspace.Int64(part*per + int64(r.r.IntN(int(per))))
}

// BenchmarkFencing (issue 11): uncontended lock+unlock with a fencing token
// (form=library: advisory.New(db, advisory.WithFencing("")), Lock + Token +
// Release) against the same Locker without fencing (form=library-nofence),
// with 1 connection and with 8 in parallel, on a private durable server
// (fsync, synchronous_commit and full_page_writes on), keys from a set of
// 1,000, after a warm-up in which the sessions learnt the epoch.
// benchreport puts the ratio library-nofence / library against the goal
// "fencing ≥ 0.8× without" (issue 19's paired goal: BenchmarkFencingPaired).
func BenchmarkFencing(b *testing.B) {
	srv := itest.NewServer(b, itest.Config{Settings: durableSettings})
	for _, d := range itest.Drivers {
		b.Run("driver="+d, func(b *testing.B) {
			dsn := srv.NewDatabase(b)
			db := itest.OpenDSN(b, d, dsn)
			admin := itest.OpenDSN(b, "postgres", dsn)
			ctx := context.Background()
			if err := advisory.CreateFenceTable(ctx, db, ""); err != nil {
				b.Fatal(err)
			}
			fenced := advisory.New(db, advisory.WithFencing(""))
			plain := advisory.New(db)
			// Warm-up: the epoch of this server lifetime is bumped, and
			// the sessions learn it, before anything is timed.
			for k := range fenceKeys {
				lease, err := fenced.Lock(ctx, keyspace.Int64(int64(k)))
				if err != nil {
					b.Fatal(err)
				}
				if err := lease.Release(ctx); err != nil {
					b.Fatal(err)
				}
			}
			for _, conns := range []int{1, 8} {
				parts := 1 // one goroutine: every key
				if conns > 1 {
					parts = runtime.GOMAXPROCS(0) * parallelism(conns) // RunParallel's goroutines
				}
				keys := &fenceKeyer{parts: parts}
				lockRelease := func(l *advisory.Locker, wantToken bool) op {
					return func(ctx context.Context, _ *sql.Conn, r rng) error {
						lease, err := l.Lock(ctx, keys.key(r))
						if err != nil {
							return err
						}
						if wantToken && lease.Token() == 0 {
							b.Error("a fenced lease without a token")
						}
						return lease.Release(ctx)
					}
				}
				runForms(b, db, conns, []form{
					{name: "library", op: lockRelease(fenced, true)},
					{name: "library-nofence", op: lockRelease(plain, false)},
				})
			}
			testkit.WaitConnsIdle(b, db)
			testkit.WaitNoAdvisoryLocks(b, admin)
		})
	}
}

// BenchmarkFencingPaired (issue 19): uncontended lock+unlock with a fencing
// token against the same without, as pairs in one loop (runPaired), on a
// private durable server (fsync, synchronous_commit and full_page_writes
// on), per driver, with 1 connection and with 8 goroutines, in each of the
// two session modes, the fenced and the plain Locker alike:
// sessions=multiplexed is advisory.New(db, advisory.WithFencing("")) against
// advisory.New(db), the Lockers users get; sessions=dedicated adds
// advisory.WithDedicatedSessions() to both (a connection per lease).
// Metrics: fenced-ns/op, plain-ns/op and ratio (plain time ÷ fenced time:
// the fenced throughput relative to the plain one; the goal is ≥ 0.9), and
// for multiplexed sessions fenced-ops/batch (the operations of the fenced
// Locker per statement). Every key comes from the benchmark's random set; the sessions know the
// epoch before the timing starts (the warm-up).
func BenchmarkFencingPaired(b *testing.B) {
	srv := itest.NewServer(b, itest.Config{Settings: durableSettings})
	for _, d := range itest.Drivers {
		b.Run("driver="+d, func(b *testing.B) {
			dsn := srv.NewDatabase(b)
			// The pinned connections of the harness come from db; each
			// Locker has a pool of its own, large enough that a
			// multiplexed Locker's sessions never starve the other.
			db := itest.OpenDSN(b, d, dsn)
			pool := func() *sql.DB {
				p := itest.OpenDSN(b, d, dsn)
				p.SetMaxOpenConns(24)
				p.SetMaxIdleConns(24)
				return p
			}
			admin := itest.OpenDSN(b, "postgres", dsn)
			ctx := context.Background()
			if err := advisory.CreateFenceTable(ctx, db, ""); err != nil {
				b.Fatal(err)
			}
			for _, mode := range []struct {
				name string
				opts []advisory.Option
			}{
				{"multiplexed", nil},
				{"dedicated", []advisory.Option{advisory.WithDedicatedSessions()}},
			} {
				fenced := advisory.New(pool(), append([]advisory.Option{advisory.WithFencing("")}, mode.opts...)...)
				plain := advisory.New(pool(), mode.opts...)
				fencedOp := func(ctx context.Context, _ *sql.Conn, r rng) error {
					k, _ := r.key()
					lease, err := fenced.Lock(ctx, k)
					if err != nil {
						return err
					}
					if lease.Token() == 0 {
						b.Error("a fenced lease without a token")
					}
					return lease.Release(ctx)
				}
				for _, conns := range []int{1, 8} {
					b.Run(fmt.Sprintf("conns=%d/sessions=%s", conns, mode.name), func(b *testing.B) {
						before := fenced.Stats()
						runPaired(b, db, conns, fencedOp, libraryOp(plain), "fenced", "plain")
						if st := fenced.Stats(); st.Batches > before.Batches {
							b.ReportMetric(float64(st.BatchedOps-before.BatchedOps)/float64(st.Batches-before.Batches), "fenced-ops/batch")
						}
					})
				}
			}
			testkit.WaitConnsIdle(b, db)
			testkit.WaitNoAdvisoryLocks(b, admin)
		})
	}
}
