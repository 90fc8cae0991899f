package txlock_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// TestLockAllOrder shows from another session that LockAll takes the keys in
// the order of Key.Less whatever order they are passed in: blocked on the
// second key it already holds the first, and blocked on the first it does not
// yet hold the second.
func TestLockAllOrder(t *testing.T) {
	pairs := [][2]keyspace.Key{
		{keyspace.Int64(-3), keyspace.Int64(2)},
		{keyspace.Int64(1 << 40), keyspace.Pair(-10, 0)}, // every bigint key sorts before every pair
		{keyspace.Pair(-1, 5), keyspace.Pair(0, -5)},
	}
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		db := itest.Open(t, driverName)
		ctx := ctxT(t)
		for _, p := range pairs {
			first, second := p[0], p[1]
			t.Run(fmt.Sprintf("%v<%v", first, second), func(t *testing.T) {
				for _, blockOn := range []keyspace.Key{second, first} {
					release := holdElsewhere(t, db, blockOn)
					for _, kind := range txKinds {
						if kind.name == "sqlx.Tx" {
							continue // sends what sql.Tx (pgx) or styled (lib/pq) sends
						}
						tx, err := kind.begin(ctx, db, driverName)
						if err != nil {
							t.Fatal(err)
						}
						got := make(chan error, 1)
						go func() { got <- txlock.LockAll(ctx, tx, second, first) }() // given in reverse
						waitWaiting(t, db, 1)
						if blockOn == second && free(t, db, first, false) {
							t.Errorf("%s: waiting for %v, LockAll does not hold %v yet", kind.name, second, first)
						}
						if blockOn == first && !free(t, db, second, false) {
							t.Errorf("%s: waiting for %v, LockAll already holds %v", kind.name, first, second)
						}
						release()
						if err := <-got; err != nil {
							t.Fatal(err)
						}
						if free(t, db, first, false) || free(t, db, second, false) {
							t.Errorf("%s: LockAll returned without holding both keys", kind.name)
						}
						if err := tx.Rollback(); err != nil {
							t.Fatal(err)
						}
						release = holdElsewhere(t, db, blockOn)
					}
					release()
				}
			})
		}
		clean(t, db)
	})
}

// TestLockAllOppositeOrders runs many pairs of transactions that lock the same
// keys listed in opposite orders, all at once; none may fail with "deadlock
// detected" (or anything else), and all must finish in bounded time.
func TestLockAllOppositeOrders(t *testing.T) {
	const (
		pairs   = 500
		workers = 10 // pairs in flight at once: 20 transactions
	)
	keys := []keyspace.Key{keyspace.Int64(-1), keyspace.Int64(1), keyspace.Pair(-1, 1), keyspace.Pair(1, -1), keyspace.Hash("txlock:stress")}
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		db := itest.Open(t, driverName)
		db.SetMaxOpenConns(2 * workers)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()

		run := func(set []keyspace.Key) error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			if err := txlock.LockAll(ctx, tx, set...); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "SELECT 1"); err != nil {
				return err
			}
			return tx.Commit()
		}

		var next, deadlocks, failures atomic.Int64
		var firstErr sync.Once
		var wg sync.WaitGroup
		start := time.Now()
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= pairs || ctx.Err() != nil {
						return
					}
					// Pair i locks a window of 2..5 keys, one side forwards,
					// the other backwards.
					n := 2 + int(i)%4
					off := int(i) % len(keys)
					fwd := make([]keyspace.Key, n)
					bwd := make([]keyspace.Key, n)
					for j := 0; j < n; j++ {
						fwd[j] = keys[(off+j)%len(keys)]
						bwd[n-1-j] = fwd[j]
					}
					errs := make(chan error, 2)
					go func() { errs <- run(fwd) }()
					go func() { errs <- run(bwd) }()
					for range 2 {
						if err := <-errs; err != nil {
							failures.Add(1)
							if pgerr.SQLState(err) == pgerr.DeadlockDetected {
								deadlocks.Add(1)
							}
							firstErr.Do(func() { t.Errorf("pair %d: %v", i, err) })
						}
					}
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		if ctx.Err() != nil {
			t.Fatalf("did not finish in 90s (%d of %d pairs started)", next.Load(), pairs)
		}
		if deadlocks.Load() != 0 || failures.Load() != 0 {
			t.Fatalf("%d deadlocks, %d failures in %d pairs", deadlocks.Load(), failures.Load(), pairs)
		}
		t.Logf("%s: %d pairs (%d transactions) in opposite orders, %d at once: 0 deadlocks in %v",
			driverName, pairs, 2*pairs, 2*workers, elapsed.Round(time.Millisecond))
		clean(t, db)
	})
}
