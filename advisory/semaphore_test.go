package advisory_test

import (
	"context"
	"database/sql"
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

var semNS = keyspace.MustNamespace("advisory-test-sem", 0x5e4a)

func newSem(t *testing.T, l *advisory.Locker, name string, n int, opts ...advisory.SemaphoreOption) *advisory.Semaphore {
	t.Helper()
	s, err := advisory.NewSemaphore(l, semNS, name, n, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// slotHolders counts the granted rows of the semaphore's slot keys.
func (e *env) slotHolders(t *testing.T, name string, n int) int {
	t.Helper()
	total := 0
	for _, k := range advisory.SemaphoreSlots(semNS, name, n) {
		total += len(e.holders(t, k))
	}
	return total
}

func TestSemaphoreBadArgs(t *testing.T) {
	l := advisory.New(nil)
	for _, c := range []struct {
		l    *advisory.Locker
		name string
		n    int
	}{{nil, "x", 1}, {l, "", 1}, {l, "x", 0}, {l, "x", -3}, {l, "x", advisory.MaxSemaphoreSlots + 1}} {
		if _, err := advisory.NewSemaphore(c.l, semNS, c.name, c.n); !errors.Is(err, advisory.ErrBadSemaphore) {
			t.Errorf("NewSemaphore(%v, %q, %d): %v, want ErrBadSemaphore", c.l != nil, c.name, c.n, err)
		}
	}
}

func TestSemaphoreSlotsWrap(t *testing.T) {
	// Slot numbers wrap at the end of int32 instead of overflowing.
	slots := advisory.SemaphoreSlots(semNS, "x", 3)
	seen := map[keyspace.Key]bool{}
	for _, k := range slots {
		if !semNS.Contains(k) || seen[k] {
			t.Fatalf("slots %v: %v not distinct or not in the namespace", slots, k)
		}
		seen[k] = true
	}
}

func TestSemaphoreTryAndAcquire(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 30*time.Second)
		l := advisory.New(e.db)
		other := advisory.New(itest.OpenDSN(t, driver, e.dsn)) // another process
		const name = "tenant-7"
		s, s2 := newSem(t, l, name, 2), newSem(t, other, name, 2)

		a, err := s.TryAcquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s2.TryAcquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if a.Slot() == b.Slot() {
			t.Fatalf("both holders on slot %d", a.Slot())
		}
		if _, err := s.TryAcquire(ctx); !errors.Is(err, advisory.ErrNotAcquired) {
			t.Fatalf("third TryAcquire: %v, want ErrNotAcquired", err)
		}
		if got := e.slotHolders(t, name, 2); got != 2 {
			t.Fatalf("%d slots held in pg_locks, want 2", got)
		}
		// Acquire waits, bounded by its context, and holds nothing after.
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err = s.Acquire(wctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Acquire on a full semaphore: %v, want DeadlineExceeded", err)
		}
		// A slot freed by the other process is found by a waiter.
		got := make(chan *advisory.SemaphoreLease, 1)
		go func() {
			sl, err := s.Acquire(ctx)
			if err != nil {
				t.Error(err)
			}
			got <- sl
		}()
		time.Sleep(50 * time.Millisecond)
		if err := b.Release(ctx); err != nil {
			t.Fatal(err)
		}
		c := <-got
		if c == nil {
			t.FailNow()
		}
		// Everything a lease has: Tx on the holding connection, Err, Lost.
		if err := c.Tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "SELECT 1")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if c.Err() != nil {
			t.Fatal(c.Err())
		}
		select {
		case <-c.Lost():
			t.Fatal("Lost closed on a held slot")
		default:
		}
		// A release inside the process wakes a waiter of it, which takes the slot.
		go func() {
			sl, err := s.Acquire(ctx)
			if err != nil {
				t.Error(err)
			}
			got <- sl
		}()
		waitFor(t, 10*time.Second, "a waiter", func() bool { return s.Stats().Tries > 0 })
		time.Sleep(50 * time.Millisecond)
		if err := a.Release(ctx); err != nil {
			t.Fatal(err)
		}
		d := <-got
		if err := c.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Release(ctx); !errors.Is(err, advisory.ErrReleased) {
			t.Fatalf("second Release: %v", err)
		}
		if !errors.Is(c.Err(), advisory.ErrReleased) {
			t.Fatalf("Err after Release: %v", c.Err())
		}
		if err := d.Release(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("stats %+v", s.Stats())
	})
}

func TestSemaphoreLoss(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 30*time.Second)
		l := advisory.New(e.db, advisory.WithKeepAlive(100*time.Millisecond))
		s := newSem(t, l, "loss", 1)
		sl, err := s.TryAcquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		lostErr := make(chan error, 1)
		sl.AfterLost(func(err error) { lostErr <- err })
		e.terminate(t, sl.PID())
		select {
		case <-sl.Lost():
		case <-ctx.Done():
			t.Fatal("loss not reported")
		}
		if err := <-lostErr; !errors.Is(err, advisory.ErrLockLost) {
			t.Fatalf("AfterLost: %v", err)
		}
		if !errors.Is(sl.Err(), advisory.ErrLockLost) {
			t.Fatalf("Err: %v", sl.Err())
		}
		if err := sl.Tx(ctx, func(*sql.Tx) error { return nil }); !errors.Is(err, advisory.ErrLockLost) {
			t.Fatalf("Tx on a lost slot: %v", err)
		}
		if err := sl.Release(ctx); !errors.Is(err, advisory.ErrLockLost) {
			t.Fatalf("Release of a lost slot: %v", err)
		}
		sl2, err := s.TryAcquire(ctx)
		if err != nil {
			t.Fatalf("the slot of a lost holder: %v", err)
		}
		_ = sl2.Release(ctx)
	})
}

// envInt reads a positive integer from the environment, else def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// TestSemaphoreStress: 8 pools (processes) x 50 goroutines on a semaphore of
// 5, random hold times, random cancels. The number of holders at once never
// exceeds 5 and reaches it; nothing is left held. It prints the throughput
// and what waiting cost the server. PGADVISORY_SEM_SECONDS sets how long it
// runs (default 3).
func TestSemaphoreStress(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		const pools, workers, n = 8, 50, 5
		run := time.Duration(envInt(t, "PGADVISORY_SEM_SECONDS", 3)) * time.Second
		ctx := timeout(t, run+2*time.Minute)
		const name = "stress"

		var sems []*advisory.Semaphore
		for range pools {
			db := itest.OpenDSN(t, driver, e.dsn)
			db.SetMaxOpenConns(8)
			db.SetMaxIdleConns(8)
			sems = append(sems, newSem(t, advisory.New(db), name, n))
		}
		var holding, peak, acquired, cancelled atomic.Int64
		var bySlot [n]atomic.Int64
		stop := time.Now().Add(run)
		var wg sync.WaitGroup
		for p := range pools {
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Now().Before(stop) {
						actx, cancel := context.WithTimeout(ctx, time.Duration(rand.IntN(400))*time.Millisecond)
						sl, err := sems[p].Acquire(actx)
						// A dial cut short by the deadline can fail a moment
						// before the context says it ended.
						expired := actx.Err() != nil
						cancel()
						if err != nil {
							if !errors.Is(err, context.DeadlineExceeded) && !expired {
								t.Errorf("Acquire: %v", err)
								return
							}
							cancelled.Add(1)
							continue
						}
						if bySlot[sl.Slot()].Add(1) != 1 {
							t.Errorf("two holders of slot %d at once", sl.Slot())
						}
						h := holding.Add(1)
						for {
							m := peak.Load()
							if h <= m || peak.CompareAndSwap(m, h) {
								break
							}
						}
						time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
						holding.Add(-1)
						bySlot[sl.Slot()].Add(-1)
						if err := sl.Release(context.Background()); err != nil {
							t.Errorf("Release: %v", err)
						}
						acquired.Add(1)
					}
				}()
			}
		}
		// pg_locks agrees: never more than n slot rows granted.
		var serverPeak int
		for time.Now().Before(stop) {
			serverPeak = max(serverPeak, e.slotHolders(t, name, n))
			time.Sleep(20 * time.Millisecond)
		}
		wg.Wait()
		elapsed := time.Since(stop.Add(-run))

		var st advisory.SemaphoreStats
		for _, s := range sems {
			x := s.Stats()
			st.Tries += x.Tries
			st.Refused += x.Refused
			st.Waits += x.Waits
			st.WaitTimeouts += x.WaitTimeouts
		}
		secs := elapsed.Seconds()
		// Spent on waiting: the refused tries, and the try and the wait of
		// every wait on the server.
		wasted := st.Refused + 2*st.Waits
		t.Logf("%s: %d pools x %d goroutines, n=%d, %v: %d acquisitions (%.0f/s), %d cancelled waits, peak holders %d (pg_locks %d)",
			driver, pools, workers, n, elapsed.Round(time.Millisecond), acquired.Load(), float64(acquired.Load())/secs,
			cancelled.Load(), peak.Load(), serverPeak)
		t.Logf("%s: tries %d (%d refused), server waits %d (%d ran out); round trips spent on waiting %.0f/s (all %d processes)",
			driver, st.Tries, st.Refused, st.Waits, st.WaitTimeouts, float64(wasted)/secs, pools)
		// The client's count lags the server's grants: either may see the
		// moment all n slots were held, neither may ever see more.
		if peak.Load() > n || serverPeak > n || max(int(peak.Load()), serverPeak) != n {
			t.Fatalf("peak holders %d (pg_locks %d), want exactly %d", peak.Load(), serverPeak, n)
		}
		testkit.WaitNoAdvisoryLocks(t, e.admin)
	})
}

// TestSemaphoreWaitTimeoutAtGrant: a waiter's wait on the server for a slot
// is bounded by lock_timeout (the poll interval), and the server can grant
// the slot as the timeout fires and still fail the wait with 55P03. The slot
// must not stay held by a connection of the waiter's pool: after every
// lease is released, no slot is held. The holder of another process
// releases at random moments around the waiter's poll interval.
func TestSemaphoreWaitTimeoutAtGrant(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 2*time.Minute)
		const name = "timeout-at-grant"
		trials := envInt(t, "PGADVISORY_TIMEOUT_TRIALS", 300)
		holder := newSem(t, advisory.New(itest.OpenDSN(t, driver, e.dsn)), name, 1)
		waiter := newSem(t, advisory.New(e.db), name, 1, advisory.SemaphorePoll(10*time.Millisecond))
		for i := range trials {
			h, err := holder.TryAcquire(ctx)
			if err != nil {
				t.Fatalf("trial %d: the holder's TryAcquire: %v", i, err)
			}
			got := make(chan error, 1)
			go func() {
				actx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				sl, err := waiter.Acquire(actx)
				if err == nil {
					err = sl.Release(ctx)
				}
				got <- err
			}()
			// The waiter's waits on the server last 7.5 to 12.5 ms each.
			time.Sleep(time.Duration(rand.IntN(25000)) * time.Microsecond)
			if err := h.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-got; err != nil {
				t.Fatalf("trial %d: the waiter: %v (slot holders %v)", i, err,
					e.holders(t, advisory.SemaphoreSlots(semNS, name, 1)[0]))
			}
			// A discarded connection's backend ends a moment later; a slot
			// left on a pooled connection stays.
			deadline := time.Now().Add(2 * time.Second)
			for e.slotHolders(t, name, 1) > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("trial %d: every lease released, and the slot is still held", i)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		t.Logf("%s: %d trials, stats %+v", driver, trials, waiter.Stats())
	})
}
