package advisory_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// TestCancelSafety cancels a contended Lock at random moments: before it
// reaches the server (a third of the trials: random from the call), and
// while it waits and around the grant (the rest: random from the moment the
// Contended hook says the waiting statement is about to go, with the holder
// releasing at a random moment too, before or after the cancel). After every
// round no advisory lock is left on any backend and the pool still works.
func TestCancelSafety(t *testing.T) {
	const workers, perRound = 8, 25
	trials := 2000
	if testing.Short() {
		trials = 200
	}
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		e.db.SetMaxIdleConns(2 * workers)
		var waiting sync.Map // key -> chan struct{}: the contender is about to wait
		hooked := advisory.New(e.db, advisory.WithHooks(advisory.Hooks{
			Contended: func(k keyspace.Key, _ bool) {
				if c, ok := waiting.Load(k); ok {
					select {
					case c.(chan struct{}) <- struct{}{}:
					default:
					}
				}
			},
		}))
		plain := advisory.New(e.db)
		holders := advisory.New(e.db)
		var st cancelStats
		start := time.Now()
		rounds := trials / (workers * perRound)
		for round := range rounds {
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					key := keyspace.Pair(int32(round), int32(w))
					signal := make(chan struct{}, 1)
					waiting.Store(key, signal)
					for i := range perRound {
						var ok bool
						if i%3 == 0 {
							ok = cancelTrial(t, holders, plain, key, nil, &st)
						} else {
							ok = cancelTrial(t, holders, hooked, key, signal, &st)
						}
						if !ok {
							return
						}
					}
				}()
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			testkit.WaitNoAdvisoryLocks(t, e.admin)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			lease, err := plain.TryLock(ctx, keyspace.Int64(int64(round)))
			if err == nil {
				err = lease.Release(ctx)
			}
			cancel()
			if err != nil {
				t.Fatalf("pool unusable after round %d: %v", round, err)
			}
		}
		t.Logf("%d trials in %v: %d acquired (cancel too late), %d cancelled (%d of them after the statement reached the driver); %d with the cancel before the holder's release",
			st.acquired.Load()+st.cancelled.Load(), time.Since(start).Round(time.Millisecond),
			st.acquired.Load(), st.cancelled.Load(), st.sent.Load(), st.cancelFirst.Load())
		if n := st.acquired.Load() + st.cancelled.Load(); n < int64(trials) {
			t.Fatalf("%d trials, want %d", n, trials)
		}
	})
}

type cancelStats struct {
	acquired, cancelled, sent, cancelFirst atomic.Int64
}

// cancelTrial runs one trial on key; false means the test failed. With a
// signal, the random moments count from the signal (the contender is about
// to wait), else from the contender's call.
func cancelTrial(t *testing.T, hl, l *advisory.Locker, key keyspace.Key, signal chan struct{}, st *cancelStats) bool {
	bg, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	// The holder is another Locker, as another process would be: the
	// contender then waits at the server, not in l's in-process queue, and
	// the cancel lands on a statement in flight.
	holder, err := hl.Lock(bg, key)
	if err != nil {
		t.Errorf("holder Lock: %v", err)
		return false
	}
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	type result struct {
		lease *advisory.Lease
		err   error
	}
	res := make(chan result, 1)
	go func() {
		lease, err := l.Lock(ctx, key)
		res <- result{lease, err}
	}()
	if signal != nil {
		select {
		case <-signal:
		case <-bg.Done():
			t.Errorf("the contender never reported contention")
			_ = holder.Release(bg)
			return false
		}
	}
	// Random timing, not synchronisation: cancel and release at random
	// moments in the next few milliseconds, in either order.
	cancelAt := time.Duration(rand.Int64N(int64(3 * time.Millisecond)))
	releaseAt := time.Duration(rand.Int64N(int64(3 * time.Millisecond)))
	first, second := cancelAt, releaseAt
	if releaseAt < cancelAt {
		first, second = releaseAt, cancelAt
	}
	time.Sleep(first)
	var rerr error
	if first == cancelAt {
		st.cancelFirst.Add(1)
		cancel()
		time.Sleep(second - first)
		rerr = holder.Release(bg)
	} else {
		rerr = holder.Release(bg)
		time.Sleep(second - first)
		cancel()
	}
	if rerr != nil {
		t.Errorf("holder Release: %v", rerr)
		return false
	}
	r := <-res
	switch {
	case r.err == nil:
		st.acquired.Add(1)
		if err := r.lease.Release(ctx); err != nil {
			t.Errorf("contender Release: %v", err)
			return false
		}
	case errors.Is(r.err, context.Canceled):
		st.cancelled.Add(1)
		if signal != nil {
			st.sent.Add(1)
		}
	default:
		t.Errorf("contender Lock = %v, want success or context.Canceled", r.err)
		return false
	}
	return true
}

// TestMutualExclusion runs critical sections from several pools (separate
// sessions, as separate processes would be) and many goroutines, exclusive
// and shared at random, and checks that no exclusive holder ever overlaps
// anyone.
func TestMutualExclusion(t *testing.T) {
	const pools, goroutines, iterations = 3, 4, 25
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		key := testKey(t)
		var writers, readers, maxReaders, violations, sections atomic.Int64
		var wg sync.WaitGroup
		for p := range pools {
			db := e.db
			if p > 0 {
				db = itest.OpenDSN(t, driver, e.dsn)
			}
			l := advisory.New(db)
			for range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					for range iterations {
						shared := rand.IntN(2) == 0
						var lease *advisory.Lease
						var err error
						if shared {
							lease, err = l.LockShared(ctx, key)
						} else {
							lease, err = l.Lock(ctx, key)
						}
						if err != nil {
							t.Errorf("lock: %v", err)
							return
						}
						if shared {
							n := readers.Add(1)
							for m := maxReaders.Load(); n > m && !maxReaders.CompareAndSwap(m, n); m = maxReaders.Load() {
							}
							if writers.Load() != 0 {
								violations.Add(1)
							}
						} else if writers.Add(1) != 1 || readers.Load() != 0 {
							violations.Add(1)
						}
						sections.Add(1)
						work()
						if shared {
							readers.Add(-1)
						} else {
							writers.Add(-1)
						}
						if err := lease.Release(ctx); err != nil {
							t.Errorf("release: %v", err)
							return
						}
					}
				}()
			}
		}
		wg.Wait()
		t.Logf("%d critical sections from %d pools x %d goroutines: %d overlaps with an exclusive holder, up to %d shared holders at once",
			sections.Load(), pools, goroutines, violations.Load(), maxReaders.Load())
		if violations.Load() != 0 {
			t.Fatalf("%d overlaps", violations.Load())
		}
	})
}

// work stays in the critical section for a random short while, long enough
// for others to try to get in.
func work() {
	deadline := time.Now().Add(time.Duration(rand.Int64N(int64(time.Millisecond))))
	for time.Now().Before(deadline) {
		runtime.Gosched()
	}
}

// TestLockAllOppositeOrders: pairs of callers lock the same keys in opposite
// orders at the same time; sorting inside LockAll means neither ever waits
// for the other in a cycle (the server would report a deadlock).
func TestLockAllOppositeOrders(t *testing.T) {
	const pairs, workers = 200, 4
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		e.db.SetMaxIdleConns(2 * workers)
		l := advisory.New(e.db)
		keys := []keyspace.Key{keyspace.Pair(3, 1), keyspace.Int64(77), testKey(t), keyspace.Pair(-1, 9)}
		rev := []keyspace.Key{keys[3], keys[2], keys[1], keys[0]}
		start := time.Now()
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range pairs / workers {
					var pair sync.WaitGroup
					for _, order := range [][]keyspace.Key{keys, rev} {
						pair.Add(1)
						go func() {
							defer pair.Done()
							ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
							defer cancel()
							lease, err := l.LockAll(ctx, order...)
							if err != nil {
								t.Errorf("LockAll(%v): %v", order, err)
								return
							}
							runtime.Gosched()
							if err := lease.Release(ctx); err != nil {
								t.Errorf("Release: %v", err)
							}
						}()
					}
					pair.Wait()
				}
			}()
		}
		wg.Wait()
		t.Logf("%d pairs of opposite-order LockAll calls in %v, no deadlock", pairs, time.Since(start).Round(time.Millisecond))
	})
}
