package advisory_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// The tests of this file are about multiplexed sessions: many leases on a
// few connections.

// TestMultiplexedManyLeases: 10,000 independent leases (10,000 calls, not
// one LockAll) held at once over at most 4 connections, then each released
// on its own.
func TestMultiplexedManyLeases(t *testing.T) {
	const leases, workers = 10_000, 64
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		l := advisory.New(e.db, advisory.WithSessions(4))
		ctx := timeout(t, 120*time.Second)
		gauge := watchInUse(e.db)
		base := rand.Int64()
		held := make([]*advisory.Lease, leases)
		start := time.Now()
		var g errgroup.Group
		for w := range workers {
			g.Go(func() error {
				for i := w; i < leases; i += workers {
					ls, err := l.TryLock(ctx, keyspace.Int64(base+int64(i)))
					if err != nil {
						return fmt.Errorf("lease %d: %w", i, err)
					}
					held[i] = ls
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		acquired := time.Since(start)
		pids := map[int]int{}
		for _, ls := range held {
			pids[ls.PID()]++
		}
		locks, err := testkit.AdvisoryLocks(ctx, e.admin)
		if err != nil {
			t.Fatal(err)
		}
		if len(locks) != leases {
			t.Errorf("pg_locks shows %d advisory locks, want %d", len(locks), leases)
		}
		start = time.Now()
		for w := range workers {
			g.Go(func() error {
				for i := w; i < leases; i += workers {
					if err := held[i].Release(ctx); err != nil {
						return fmt.Errorf("release %d: %w", i, err)
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		released := time.Since(start)
		peak := gauge.Stop()
		t.Logf("%d leases acquired in %v and released in %v, on %d backends %v, peak connections in use %d",
			leases, acquired.Round(time.Millisecond), released.Round(time.Millisecond), len(pids), pids, peak)
		if len(pids) > 4 || peak > 4 {
			t.Errorf("%d backends and %d connections for the leases, want at most 4", len(pids), peak)
		}
		checkIdle(t, l)
	})
}

// TestMultiplexedShared: shared leases of one key on one session are
// counted: the key stays held in shared mode until the last of them is
// released.
func TestMultiplexedShared(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		l := advisory.New(e.db, advisory.WithSessions(1))
		other := advisory.New(e.admin, advisory.WithDedicatedSessions())
		ctx := timeout(t, 30*time.Second)
		key := testKey(t)
		s1, err := l.LockShared(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := l.TryLockShared(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if s1.PID() != s2.PID() {
			t.Fatalf("two shared leases on backends %d and %d, want one session", s1.PID(), s2.PID())
		}
		exclusiveRefused := func(when string) {
			t.Helper()
			if ls, err := other.TryLock(ctx, key); !errors.Is(err, advisory.ErrNotAcquired) {
				_ = ls.Release(ctx)
				t.Fatalf("%s: another process's exclusive try = %v, want ErrNotAcquired", when, err)
			}
		}
		exclusiveRefused("two shared leases")
		if err := s1.Release(ctx); err != nil {
			t.Fatal(err)
		}
		exclusiveRefused("one shared lease left")
		if s2.Err() != nil {
			t.Fatalf("the other shared lease: %v", s2.Err())
		}
		if err := s2.Release(ctx); err != nil {
			t.Fatal(err)
		}
		ls, err := other.TryLock(ctx, key)
		if err != nil {
			t.Fatalf("exclusive try after both shared leases were released: %v", err)
		}
		if err := ls.Release(ctx); err != nil {
			t.Fatal(err)
		}
		checkIdle(t, l)
	})
}

// TestMultiplexedSessionLoss: leases on two sessions; one session's backend
// is terminated. Exactly the leases of that session are lost, within the
// keepalive interval plus a second, and those of the other session still
// hold their keys.
func TestMultiplexedSessionLoss(t *testing.T) {
	const keepAlive, n = 200 * time.Millisecond, 32
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		l := advisory.New(e.db, advisory.WithSessions(2), advisory.WithKeepAlive(keepAlive))
		ctx := timeout(t, 60*time.Second)
		var leases []*advisory.Lease
		var mu sync.Mutex
		// Concurrent tries spread over both sessions; try until they have.
		for round := 0; ; round++ {
			var g errgroup.Group
			for range n {
				g.Go(func() error {
					ls, err := l.TryLock(ctx, testKey(t))
					mu.Lock()
					leases = append(leases, ls)
					mu.Unlock()
					return err
				})
			}
			if err := g.Wait(); err != nil {
				t.Fatal(err)
			}
			if len(pidsOf(leases)) == 2 {
				break
			}
			if round == 20 {
				t.Fatalf("leases on backends %v after %d rounds, want two sessions", pidsOf(leases), round)
			}
		}
		victim := leases[0].PID()
		start := time.Now()
		e.terminate(t, victim)
		for _, ls := range leases {
			if ls.PID() != victim {
				continue
			}
			select {
			case <-ls.Lost():
			case <-time.After(keepAlive + time.Second - time.Since(start)):
				t.Fatalf("a lease of the terminated session not lost within %v", keepAlive+time.Second)
			}
		}
		t.Logf("the %d leases of backend %d lost %v after the termination", countOn(leases, victim), victim, time.Since(start).Round(time.Millisecond))
		for _, ls := range leases {
			switch {
			case ls.PID() == victim:
				if !errors.Is(ls.Err(), advisory.ErrLockLost) {
					t.Errorf("a lease of the terminated session: Err %v", ls.Err())
				}
				if err := ls.Release(ctx); !errors.Is(err, advisory.ErrLockLost) {
					t.Errorf("Release of a lost lease = %v", err)
				}
			default:
				if ls.Err() != nil {
					t.Errorf("a lease of the other session: Err %v", ls.Err())
				}
				if got := e.holders(t, ls.Key()); !slices.Equal(got, []int{ls.PID()}) {
					t.Errorf("a lease of the other session: holders %v, want [%d]", got, ls.PID())
				}
				if err := ls.Release(ctx); err != nil {
					t.Errorf("Release of a lease of the other session: %v", err)
				}
			}
		}
		checkIdle(t, l)
	})
}

func pidsOf(leases []*advisory.Lease) []int {
	var pids []int
	for _, ls := range leases {
		if !slices.Contains(pids, ls.PID()) {
			pids = append(pids, ls.PID())
		}
	}
	return pids
}

func countOn(leases []*advisory.Lease, pid int) int {
	n := 0
	for _, ls := range leases {
		if ls.PID() == pid {
			n++
		}
	}
	return n
}

// TestMultiplexedWaitElsewhere: a Lock of a key held by another process
// waits on a connection of its own, never on a shared session: meanwhile the
// session takes and gives back other keys. Such waits are bounded
// (WithWaiting): beyond the bound an acquire waits in memory, not on a
// connection.
func TestMultiplexedWaitElsewhere(t *testing.T) {
	const waiting = 2
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		l := advisory.New(e.db, advisory.WithSessions(1), advisory.WithWaiting(waiting))
		ctx := timeout(t, 60*time.Second)
		busy := []keyspace.Key{testKey(t), testKey(t), testKey(t), testKey(t)}
		other, err := e.admin.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		for _, k := range busy {
			if _, err := other.ExecContext(ctx, `SELECT pg_advisory_lock($1::int8)`, bigint(k)); err != nil {
				t.Fatal(err)
			}
		}
		results := make(chan lockResult, len(busy))
		for _, k := range busy {
			go func() {
				ls, err := l.Lock(ctx, k)
				results <- lockResult{ls, err}
			}()
		}
		waitFor(t, 10*time.Second, "two acquires to wait on the server", func() bool {
			n := 0
			for _, k := range busy {
				n += e.waiters(t, k)
			}
			return n == waiting
		})
		// The shared session is free for other keys meanwhile.
		for range 50 {
			ls, err := l.TryLock(ctx, testKey(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := ls.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case r := <-results:
			t.Fatalf("an acquire of a key held elsewhere returned: %v", r.err)
		default:
		}
		n := 0
		for _, k := range busy {
			n += e.waiters(t, k)
		}
		if n != waiting {
			t.Fatalf("%d acquires wait on the server, want the bound %d", n, waiting)
		}
		if _, err := other.ExecContext(ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
			t.Fatal(err)
		}
		for range busy {
			r := <-results
			if r.err != nil {
				t.Fatal(r.err)
			}
			if err := r.lease.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		checkIdle(t, l)
	})
}

// TestMultiplexedStress: 8 Lockers (separate pools, as separate processes)
// x 64 goroutines over 16 keys, mixed exclusive and shared, tries and
// blocking locks, with random cancels. No exclusive holder ever overlaps
// another holder of its key; nothing is left held, in use or running.
func TestMultiplexedStress(t *testing.T) {
	const lockers, goroutines, nkeys = 8, 64, 16
	duration := 4 * time.Second
	if testing.Short() {
		duration = time.Second
	}
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		keys := make([]keyspace.Key, nkeys)
		for i := range keys {
			keys[i] = testKey(t)
		}
		type holders struct{ exclusive, shared atomic.Int64 }
		var state [nkeys]holders
		var sections, refused, cancelled, overlaps atomic.Int64
		stop := time.Now().Add(duration)
		var wg sync.WaitGroup
		for p := range lockers {
			db := itest.OpenDSN(t, driver, e.dsn)
			db.SetMaxOpenConns(10)
			l := advisory.New(db)
			t.Cleanup(func() { checkIdle(t, l) })
			for range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(p), rand.Uint64()))
					for time.Now().Before(stop) {
						ki := rng.IntN(nkeys)
						shared := rng.IntN(3) == 0
						try := rng.IntN(3) == 0
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						if rng.IntN(8) == 0 {
							// A cancel at a random moment of the acquire.
							time.AfterFunc(time.Duration(rng.IntN(2000))*time.Microsecond, cancel)
						}
						var ls *advisory.Lease
						var err error
						switch {
						case shared && try:
							ls, err = l.TryLockShared(ctx, keys[ki])
						case shared:
							ls, err = l.LockShared(ctx, keys[ki])
						case try:
							ls, err = l.TryLock(ctx, keys[ki])
						default:
							ls, err = l.Lock(ctx, keys[ki])
						}
						switch {
						case errors.Is(err, advisory.ErrNotAcquired):
							refused.Add(1)
						case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
							cancelled.Add(1)
						case err != nil:
							t.Errorf("acquire: %v", err)
						default:
							st := &state[ki]
							if shared {
								if st.shared.Add(1); st.exclusive.Load() != 0 {
									overlaps.Add(1)
								}
							} else if st.exclusive.Add(1) != 1 || st.shared.Load() != 0 {
								overlaps.Add(1)
							}
							sections.Add(1)
							work()
							if shared {
								st.shared.Add(-1)
							} else {
								st.exclusive.Add(-1)
							}
							if err := ls.Release(context.Background()); err != nil {
								t.Errorf("release: %v", err)
							}
						}
						cancel()
					}
				}()
			}
		}
		wg.Wait()
		t.Logf("%d sections, %d tries refused, %d acquires cancelled, %d overlaps", sections.Load(), refused.Load(), cancelled.Load(), overlaps.Load())
		if overlaps.Load() != 0 {
			t.Fatalf("%d overlaps of an exclusive holder", overlaps.Load())
		}
		if sections.Load() == 0 {
			t.Fatal("no section ran")
		}
	})
}

// TestMultiplexedFencing: a fenced Locker multiplexes too, and the tries
// that goroutines send together go as one statement that draws a token for
// each granted try (sqltext.BatchFenced). 32 goroutines over 2 sessions take
// and release 8 shared-by-all keys and a key of their own each: every
// holder's token is above the token of the key's previous holder, no two
// grants share a token, and batches carried several operations.
func TestMultiplexedFencing(t *testing.T) {
	const workers, rounds, nkeys = 32, 40, 8
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 60*time.Second)
		if err := advisory.CreateFenceTable(ctx, e.db, ""); err != nil {
			t.Fatal(err)
		}
		l := advisory.New(e.db, advisory.WithFencing(""), advisory.WithSessions(2))
		base := rand.Int64N(1 << 40)
		var mu [nkeys]sync.Mutex
		var last [nkeys]int64
		var ownLast [workers]int64
		var seenMu sync.Mutex
		seen := map[int64]bool{}
		pids := map[int]bool{}
		var g errgroup.Group
		for w := range workers {
			g.Go(func() error {
				for r := range rounds {
					k := (w + r) % nkeys
					ls, err := l.Lock(ctx, keyspace.Int64(base+int64(k)))
					if err != nil {
						return err
					}
					tok := ls.Token()
					mu[k].Lock() // held by this lease alone: the lock is exclusive
					if tok <= last[k] {
						mu[k].Unlock()
						return fmt.Errorf("key %d: token %d after %d", k, tok, last[k])
					}
					last[k] = tok
					mu[k].Unlock()
					seenMu.Lock()
					dup := seen[tok]
					seen[tok] = true
					pids[ls.PID()] = true
					seenMu.Unlock()
					if dup {
						return fmt.Errorf("token %d handed out twice", tok)
					}
					if err := ls.Release(ctx); err != nil {
						return err
					}
					// And a key of the worker's own: tries that meet on a
					// session with nobody queued in front of them.
					own, err := l.TryLock(ctx, keyspace.Int64(base+nkeys+int64(w)))
					if err != nil {
						return err
					}
					if own.Token() <= ownLast[w] {
						return fmt.Errorf("worker %d's key: token %d after %d", w, own.Token(), ownLast[w])
					}
					ownLast[w] = own.Token()
					if err := own.Release(ctx); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		st := l.Stats()
		t.Logf("%d grants on %d backends; %d batches carried %d operations (%.1f each); dedicated sessions now %d",
			len(seen), len(pids), st.Batches, st.BatchedOps, float64(st.BatchedOps)/float64(max(st.Batches, 1)), st.Dedicated)
		if len(seen) != workers*rounds {
			// (The workers' own keys are not in seen.)
			t.Errorf("%d distinct tokens for %d grants", len(seen), workers*rounds)
		}
		if st.Batches == 0 || st.BatchedOps < 2*st.Batches {
			t.Errorf("%d batches for %d operations: the fenced tries were not batched", st.Batches, st.BatchedOps)
		}
		checkIdle(t, l)
	})
}
