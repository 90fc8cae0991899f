package advisory_test

import (
	"context"
	"database/sql"
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

// inUseGauge samples db.Stats().InUse until stopped and keeps the peak.
type inUseGauge struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func watchInUse(db *sql.DB) *inUseGauge {
	g := &inUseGauge{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		tk := time.NewTicker(200 * time.Microsecond)
		defer tk.Stop()
		for {
			if n := int64(db.Stats().InUse); n > g.peak.Load() {
				g.peak.Store(n)
			}
			select {
			case <-g.stop:
				return
			case <-tk.C:
			}
		}
	}()
	return g
}

func (g *inUseGauge) Stop() int64 {
	close(g.stop)
	<-g.done
	return g.peak.Load()
}

// checkIdle checks that l keeps no queue entry and no live lease.
func checkIdle(t *testing.T, l *advisory.Locker) {
	t.Helper()
	if n := advisory.QueueLen(l); n != 0 {
		t.Errorf("the in-process queue keeps %d keys after everyone left", n)
	}
	if n := advisory.LiveLeases(l); n != 0 {
		t.Errorf("the Locker counts %d live leases after everyone released", n)
	}
	// A multiplexed session goes back to the pool a moment after its last
	// lease, and its backend's claim with it.
	waitFor(t, 5*time.Second, "every session to end", func() bool { return advisory.LivePIDs(l) == 0 })
}

// TestQueueHotKey: 64 goroutines of one process lock one key; they queue in
// memory, so at most 2 connections are ever in use (the holder's and the
// head waiter's), with and without handoff, and exclusion holds.
func TestQueueHotKey(t *testing.T) {
	const goroutines, iterations = 64, 8
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		e.db.SetMaxOpenConns(goroutines)
		for _, mode := range []struct {
			name string
			opts []advisory.Option
		}{{"handoff", nil}, {"no-handoff", []advisory.Option{advisory.WithHandoff(0, 0)}}} {
			t.Run(mode.name, func(t *testing.T) {
				l := advisory.New(e.db, mode.opts...)
				key := testKey(t)
				ctx := timeout(t, 60*time.Second)
				g := watchInUse(e.db)
				var inCS, overlaps atomic.Int32
				var wg sync.WaitGroup
				start := time.Now()
				for range goroutines {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range iterations {
							lease, err := l.Lock(ctx, key)
							if err != nil {
								t.Errorf("Lock: %v", err)
								return
							}
							if inCS.Add(1) != 1 {
								overlaps.Add(1)
							}
							inCS.Add(-1)
							if err := lease.Release(ctx); err != nil {
								t.Errorf("Release: %v", err)
								return
							}
						}
					}()
				}
				wg.Wait()
				peak := g.Stop()
				t.Logf("%d lock+unlock pairs in %v, peak connections in use %d", goroutines*iterations,
					time.Since(start).Round(time.Millisecond), peak)
				if overlaps.Load() != 0 {
					t.Errorf("%d overlapping critical sections", overlaps.Load())
				}
				if peak > 2 {
					t.Errorf("peak connections in use %d, want at most 2", peak)
				}
				checkIdle(t, l)
			})
		}
	})
}

// TestQueueTryLocal: a try fails fast in memory while another lease of the
// same Locker holds the key incompatibly, without taking a connection;
// shared tries pass each other.
func TestQueueTryLocal(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		l := advisory.New(e.db)
		ctx := timeout(t, 30*time.Second)
		key := testKey(t)
		held, err := l.Lock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		inUse := e.db.Stats().InUse
		for _, try := range []func(context.Context, keyspace.Key) (*advisory.Lease, error){l.TryLock, l.TryLockShared} {
			if ls, err := try(ctx, key); !errors.Is(err, advisory.ErrNotAcquired) {
				_ = ls.Release(ctx)
				t.Errorf("try while the process holds the key: %v, want ErrNotAcquired", err)
			}
		}
		if n := e.db.Stats().InUse; n != inUse {
			t.Errorf("refused tries took connections: %d in use, was %d", n, inUse)
		}
		if err := held.Release(ctx); err != nil {
			t.Fatal(err)
		}
		s1, err := l.TryLockShared(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := l.TryLockShared(ctx, key)
		if err != nil {
			t.Fatalf("second shared try: %v", err)
		}
		if ls, err := l.TryLock(ctx, key); !errors.Is(err, advisory.ErrNotAcquired) {
			_ = ls.Release(ctx)
			t.Errorf("exclusive try under shared holders: %v, want ErrNotAcquired", err)
		}
		for _, ls := range []*advisory.Lease{s1, s2} {
			if err := ls.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		checkIdle(t, l)
	})
}

// TestQueueStress: several pools (processes) x many goroutines on a few
// keys, exclusive, shared and try at random, a third of the calls cancelled
// at a random moment (in the in-process queue, at the server, or around a
// grant or handoff). No exclusive holder ever overlaps anyone; afterwards no
// queue entry, lease, lock, connection or goroutine is left.
func TestQueueStress(t *testing.T) {
	pools, goroutines, iterations := 3, 64, 6
	if testing.Short() {
		goroutines = 32
	}
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		keys := []keyspace.Key{testKey(t), testKey(t)}
		type slot struct{ excl, shared atomic.Int32 }
		slots := make([]slot, len(keys))
		var overlaps, acquired, cancelled, refused, waitPeak atomic.Int64
		lockers := make([]*advisory.Locker, pools)
		dbs := make([]*sql.DB, pools)
		for p := range pools {
			dbs[p] = itest.OpenDSN(t, driver, e.dsn)
			dbs[p].SetMaxOpenConns(goroutines)
			lockers[p] = advisory.New(dbs[p], advisory.WithHandoff(4, 10*time.Millisecond))
		}
		gauges := make([]*inUseGauge, pools)
		for p := range pools {
			gauges[p] = watchInUse(dbs[p])
		}
		ctx := timeout(t, 120*time.Second)
		var wg sync.WaitGroup
		for p := range pools {
			for g := range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(p), uint64(g)))
					l := lockers[p]
					for range iterations {
						ki := r.IntN(len(keys))
						key, s := keys[ki], &slots[ki]
						cctx, cancel := context.WithCancel(ctx)
						if r.IntN(3) == 0 {
							time.AfterFunc(time.Duration(r.Int64N(int64(3*time.Millisecond))), cancel)
						}
						var lease *advisory.Lease
						var err error
						shared := r.IntN(4) == 0
						switch r.IntN(8) {
						case 0:
							lease, err = l.TryLock(cctx, key)
							shared = false
						case 1:
							lease, err = l.TryLockShared(cctx, key)
							shared = true
						default:
							if shared {
								lease, err = l.LockShared(cctx, key)
							} else {
								lease, err = l.Lock(cctx, key)
							}
						}
						switch {
						case err == nil:
							acquired.Add(1)
						case errors.Is(err, advisory.ErrNotAcquired):
							refused.Add(1)
							cancel()
							continue
						case errors.Is(err, context.Canceled):
							cancelled.Add(1)
							cancel()
							continue
						default:
							t.Errorf("lock: %v", err)
							cancel()
							return
						}
						if shared {
							s.shared.Add(1)
							if s.excl.Load() != 0 {
								overlaps.Add(1)
							}
							s.shared.Add(-1)
						} else {
							if s.excl.Add(1) != 1 || s.shared.Load() != 0 {
								overlaps.Add(1)
							}
							s.excl.Add(-1)
						}
						if err := lease.Release(cctx); err != nil {
							t.Errorf("Release: %v", err)
						}
						cancel()
					}
				}()
			}
		}
		wg.Wait()
		for p := range pools {
			if n := gauges[p].Stop(); n > waitPeak.Load() {
				waitPeak.Store(n)
			}
		}
		t.Logf("%d acquired, %d cancelled, %d tries refused; peak connections in use per pool %d",
			acquired.Load(), cancelled.Load(), refused.Load(), waitPeak.Load())
		if overlaps.Load() != 0 {
			t.Errorf("%d overlaps of an exclusive holder", overlaps.Load())
		}
		for p := range pools {
			checkIdle(t, lockers[p])
			testkit.WaitConnsIdle(t, dbs[p])
		}
		testkit.WaitNoAdvisoryLocks(t, e.admin)
	})
}

// TestQueueCancelAtServer: a Locker of another pool holds the key, so the
// head of this process's queue waits on the server while the rest wait in
// memory; two thirds of the waiters are cancelled at a random moment, some
// before and some after the holder releases. Nothing is left held, and the pool works.
func TestQueueCancelAtServer(t *testing.T) {
	const waiters = 16
	rounds := 20
	if testing.Short() {
		rounds = 8
	}
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		other := itest.OpenDSN(t, driver, e.dsn)
		holderL := advisory.New(other)
		l := advisory.New(e.db)
		ctx := timeout(t, 120*time.Second)
		var got, cancelled atomic.Int64
		for round := range rounds {
			key := testKey(t)
			holder, err := holderL.Lock(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for range waiters {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cctx, cancel := context.WithCancel(ctx)
					defer cancel()
					if rand.IntN(3) != 0 { // the rest wait until they get the key
						time.AfterFunc(time.Duration(rand.Int64N(int64(10*time.Millisecond))), cancel)
					}
					lease, err := l.Lock(cctx, key)
					switch {
					case err == nil:
						got.Add(1)
						if err := lease.Release(cctx); err != nil {
							t.Errorf("Release: %v", err)
						}
					case errors.Is(err, context.Canceled):
						cancelled.Add(1)
					default:
						t.Errorf("Lock: %v", err)
					}
				}()
			}
			time.Sleep(time.Duration(rand.Int64N(int64(4 * time.Millisecond)))) // random timing, not synchronisation
			if err := holder.Release(ctx); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			testkit.WaitNoAdvisoryLocks(t, e.admin)
			checkIdle(t, l)
			if t.Failed() {
				t.Fatalf("round %d failed", round)
			}
		}
		t.Logf("%d acquired, %d cancelled", got.Load(), cancelled.Load())
		lease, err := l.TryLock(ctx, testKey(t))
		if err != nil {
			t.Fatalf("pool unusable: %v", err)
		}
		if err := lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
		testkit.WaitConnsIdle(t, other)
	})
}

// TestHandoffFairness: while goroutines of one process keep handing a hot
// key to each other, another process waiting on the server still gets it
// within a short time.
func TestHandoffFairness(t *testing.T) {
	const goroutines = 8
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		l := advisory.New(e.db)
		other := advisory.New(itest.OpenDSN(t, driver, e.dsn))
		ctx := timeout(t, 60*time.Second)
		key := testKey(t)
		stop := make(chan struct{})
		var handed atomic.Int64
		var wg sync.WaitGroup
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					lease, err := l.Lock(ctx, key)
					if err != nil {
						t.Errorf("Lock: %v", err)
						return
					}
					handed.Add(1)
					if err := lease.Release(ctx); err != nil {
						t.Errorf("Release: %v", err)
						return
					}
				}
			}()
		}
		waitFor(t, 10*time.Second, "the hot loop to run", func() bool { return handed.Load() > 100 })
		var worst time.Duration
		for range 5 {
			start := time.Now()
			lease, err := other.Lock(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			worst = max(worst, time.Since(start))
			if err := lease.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		close(stop)
		wg.Wait()
		t.Logf("other process waited at most %v while the process looped %d times", worst, handed.Load())
		if worst > 5*time.Second {
			t.Errorf("another process waited %v for a key handed around in one process", worst)
		}
		checkIdle(t, l)
	})
}

// TestAfterLost: AfterLost runs once on a loss, not after a plain release,
// and stop unregisters it.
func TestAfterLost(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		l := advisory.New(e.db, advisory.WithKeepAlive(100*time.Millisecond))
		ctx := timeout(t, 30*time.Second)

		ls, err := l.Lock(ctx, testKey(t))
		if err != nil {
			t.Fatal(err)
		}
		var calls atomic.Int32
		stopped := ls.AfterLost(func(error) { calls.Add(1) })
		if !stopped() {
			t.Error("stop before the loss returned false")
		}
		got := make(chan error, 1)
		ls.AfterLost(func(err error) { got <- err })
		start := time.Now()
		e.terminate(t, ls.PID())
		select {
		case err := <-got:
			t.Logf("AfterLost ran %v after the termination", time.Since(start).Round(time.Millisecond))
			if !errors.Is(err, advisory.ErrLockLost) {
				t.Errorf("AfterLost error %v, want ErrLockLost", err)
			}
		case <-time.After(100*time.Millisecond + 2*time.Second):
			t.Fatal("AfterLost did not run within interval + 2 s")
		}
		after := make(chan error, 1)
		if ls.AfterLost(func(err error) { after <- err })() {
			t.Error("stop of a registration on a lost lease returned true")
		}
		if err := <-after; !errors.Is(err, advisory.ErrLockLost) {
			t.Errorf("AfterLost on a lost lease: %v", err)
		}
		_ = ls.Release(ctx)
		if calls.Load() != 0 {
			t.Error("a stopped AfterLost function ran")
		}

		ls, err = l.Lock(ctx, testKey(t))
		if err != nil {
			t.Fatal(err)
		}
		ls.AfterLost(func(error) { calls.Add(1) })
		if err := ls.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if calls.Load() != 0 {
			t.Error("AfterLost ran after a plain release")
		}
		checkIdle(t, l)
	})
}

// TestLeaseFootprint holds 20 leases and checks that they cost no goroutine
// (the keepalive is a timer).
func TestLeaseFootprint(t *testing.T) {
	const n = 20
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		e.db.SetMaxOpenConns(n)
		e.db.SetMaxIdleConns(n)
		ctx := timeout(t, 60*time.Second)
		l := advisory.New(e.db)
		// Open the connections first so that only the leases are counted.
		warm := make([]*advisory.Lease, n)
		for i := range warm {
			ls, err := l.Lock(ctx, testKey(t))
			if err != nil {
				t.Fatal(err)
			}
			warm[i] = ls
		}
		for _, ls := range warm {
			if err := ls.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		g0 := runtime.NumGoroutine()
		leases := make([]*advisory.Lease, n)
		for i := range leases {
			ls, err := l.Lock(ctx, testKey(t))
			if err != nil {
				t.Fatal(err)
			}
			leases[i] = ls
		}
		g1 := runtime.NumGoroutine()
		t.Logf("per held lease: %.2f goroutines", float64(g1-g0)/n)
		if g1-g0 >= n/2 {
			t.Errorf("%d goroutines more while %d leases are held", g1-g0, n)
		}
		for _, ls := range leases {
			if err := ls.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		checkIdle(t, l)
	})
}

// TestNoFalsePooler: a connection released by one lease and taken at once by
// another acquire (a small pool, busy) must not be taken for a pooler's
// shared backend.
func TestNoFalsePooler(t *testing.T) {
	const goroutines, iterations = 8, 100
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		e.db.SetMaxOpenConns(2)
		l := advisory.New(e.db)
		ctx := timeout(t, 60*time.Second)
		var wg sync.WaitGroup
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range iterations {
					lease, err := l.Lock(ctx, testKey(t))
					if err != nil {
						t.Errorf("Lock: %v", err)
						return
					}
					if err := lease.Release(ctx); err != nil {
						t.Errorf("Release: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		checkIdle(t, l)
	})
}
