package benchsuite

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// eachDriver runs fn as a sub-benchmark "driver=NAME" per supported driver,
// on a fresh database, and checks afterwards that no advisory lock and no
// connection in use was left behind.
func eachDriver(b *testing.B, fn func(b *testing.B, db *sql.DB)) {
	for _, d := range itest.Drivers {
		b.Run("driver="+d, func(b *testing.B) {
			dsn := itest.DSN(b)
			db := itest.OpenDSN(b, d, dsn)
			admin := itest.OpenDSN(b, "postgres", dsn)
			fn(b, db)
			testkit.WaitConnsIdle(b, db)
			testkit.WaitNoAdvisoryLocks(b, admin)
		})
	}
}

// setPool sizes db's pool to n connections and opens them, so that no
// benchmark pays for dialling.
func setPool(b *testing.B, db *sql.DB, n int) {
	b.Helper()
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	ctx := context.Background()
	conns := make([]*sql.Conn, n)
	for i := range conns {
		c, err := db.Conn(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.PingContext(ctx); err != nil {
			b.Fatal(err)
		}
		conns[i] = c
	}
	for _, c := range conns {
		c.Close()
	}
}

// parallelism returns the b.SetParallelism argument that makes RunParallel
// start at least n goroutines.
func parallelism(n int) int {
	p := runtime.GOMAXPROCS(0)
	return max(1, (n+p-1)/p)
}

// rng is a per-goroutine source of random keys. Keys are random int64s: two
// goroutines drawing the same key in one run is vanishingly unlikely, and
// each benchmark has a database of its own (advisory locks are per database).
type rng struct{ r *rand.Rand }

var seed atomic.Uint64

func newRNG() rng {
	return rng{rand.New(rand.NewPCG(seed.Add(1), 0x9e3779b97f4a7c15))}
}

func (r rng) next() int64 { return r.r.Int64() }

func (r rng) key() (keyspace.Key, int64) {
	n := r.next()
	return keyspace.Int64(n), n
}

// warmupOps is how many operations each goroutine runs, untimed, before a
// measurement (warmUp).
const warmupOps = 200

// warmUp runs op untimed on conns goroutines, warmupOps times each (on a
// connection of its own if pin), so that what a process does once is not in
// the first sample: the heap growing to its working size, the statements a
// driver prepares on each connection, the library's state per connection.
// bench.sh runs every sample in a fresh process, so without it each sample
// would carry that cost, and the forms run first in a process most.
func warmUp(b *testing.B, db *sql.DB, conns int, pin bool, op op) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			var c *sql.Conn
			if pin {
				var err error
				if c, err = db.Conn(ctx); err != nil {
					errs <- err
					return
				}
				defer c.Close()
			}
			r := newRNG()
			for range warmupOps {
				if err := op(ctx, c, r); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("warm-up: %v", err)
	}
}
