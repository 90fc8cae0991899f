package keyqueue_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgadvisory/pgadvisory/internal/keyqueue"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

func mustLock(t *testing.T, q *keyqueue.Queue[string], key string, shared bool) *keyqueue.Ticket[string] {
	t.Helper()
	var (
		tk  *keyqueue.Ticket[string]
		err error
	)
	if shared {
		tk, err = q.LockShared(context.Background(), key)
	} else {
		tk, err = q.Lock(context.Background(), key)
	}
	if err != nil {
		t.Fatalf("lock %s: %v", key, err)
	}
	return tk
}

func TestZeroValueAndTry(t *testing.T) {
	var q keyqueue.Queue[int]
	a, ok := q.TryLock(1)
	if !ok {
		t.Fatal("TryLock on a fresh queue failed")
	}
	if _, ok := q.TryLock(1); ok {
		t.Fatal("second TryLock of a held key succeeded")
	}
	if _, ok := q.TryLockShared(1); ok {
		t.Fatal("TryLockShared of an exclusively held key succeeded")
	}
	b, ok := q.TryLock(2)
	if !ok {
		t.Fatal("TryLock of another key failed")
	}
	if q.Len() != 2 || q.Holders(1) != 1 {
		t.Fatalf("Len %d Holders %d, want 2 and 1", q.Len(), q.Holders(1))
	}
	a.Release()
	b.Release()
	if q.Len() != 0 {
		t.Fatalf("Len %d after releasing everything, want 0", q.Len())
	}
	s1, ok1 := q.TryLockShared(1)
	s2, ok2 := q.TryLockShared(1)
	if !ok1 || !ok2 {
		t.Fatal("two TryLockShared did not both succeed")
	}
	if _, ok := q.TryLock(1); ok {
		t.Fatal("TryLock of a shared-held key succeeded")
	}
	s1.Release()
	s2.Release()
	if q.Len() != 0 {
		t.Fatalf("Len %d, want 0", q.Len())
	}
}

func TestTryRespectsQueue(t *testing.T) {
	var q keyqueue.Queue[string]
	s := mustLock(t, &q, "k", true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		x := mustLock(t, &q, "k", false)
		x.Release()
	}()
	waitFor(t, "the exclusive waiter", func() bool { return q.Waiting("k") == 1 })
	if _, ok := q.TryLockShared("k"); ok {
		t.Fatal("TryLockShared jumped ahead of a queued exclusive request")
	}
	s.Release()
	<-done
	if q.Len() != 0 {
		t.Fatalf("Len %d, want 0", q.Len())
	}
}

// TestFIFO queues waiters in a known order, with modes mixed, and checks that
// they are granted in that order: a run of shared ones together, an exclusive
// one alone.
func TestFIFO(t *testing.T) {
	var q keyqueue.Queue[string]
	modes := []bool{false, true, true, false, true, false, false, true, true, true}
	first := mustLock(t, &q, "k", false)

	var (
		mu      sync.Mutex
		order   []int
		holding int
		maxHeld = make([]int, len(modes))
		wg      sync.WaitGroup
		release = make([]chan struct{}, len(modes))
	)
	for i, shared := range modes {
		release[i] = make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := mustLock(t, &q, "k", shared)
			mu.Lock()
			order = append(order, i)
			holding++
			maxHeld[i] = holding
			mu.Unlock()
			<-release[i]
			mu.Lock()
			holding--
			mu.Unlock()
			tk.Release()
		}()
		waitFor(t, fmt.Sprintf("waiter %d queued", i), func() bool { return q.Waiting("k") == i+1 })
	}
	first.Release()
	// Release each in order once granted; shared runs are granted together.
	for i := range modes {
		waitFor(t, fmt.Sprintf("waiter %d granted", i), func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(order) > i
		})
		close(release[i])
	}
	wg.Wait()
	// Group the waiters: each exclusive one alone, each run of shared ones
	// together. Grants must follow the groups in order (inside a shared run
	// the goroutines may record in any order).
	group := make([]int, len(modes))
	g := 0
	for i, shared := range modes {
		if i > 0 && (!shared || !modes[i-1]) {
			g++
		}
		group[i] = g
	}
	for i := 1; i < len(order); i++ {
		if group[order[i]] < group[order[i-1]] {
			t.Fatalf("grant order %v breaks FIFO (groups %v)", order, group)
		}
	}
	for i, shared := range modes {
		if !shared && maxHeld[i] != 1 {
			t.Errorf("exclusive waiter %d held together with %d others", i, maxHeld[i]-1)
		}
	}
	if q.Len() != 0 {
		t.Fatalf("Len %d, want 0", q.Len())
	}
}

func TestSharedDoNotStarveExclusive(t *testing.T) {
	var q keyqueue.Queue[string]
	s1 := mustLock(t, &q, "k", true)
	xDone := make(chan *keyqueue.Ticket[string])
	go func() { xDone <- mustLock(t, &q, "k", false) }()
	waitFor(t, "exclusive queued", func() bool { return q.Waiting("k") == 1 })
	sDone := make(chan *keyqueue.Ticket[string])
	go func() { sDone <- mustLock(t, &q, "k", true) }()
	waitFor(t, "late shared queued", func() bool { return q.Waiting("k") == 2 })
	s1.Release()
	x := <-xDone
	select {
	case <-sDone:
		t.Fatal("shared granted together with exclusive")
	default:
	}
	x.Release()
	(<-sDone).Release()
	if q.Len() != 0 {
		t.Fatalf("Len %d, want 0", q.Len())
	}
}

func TestCancelWhileWaiting(t *testing.T) {
	var q keyqueue.Queue[string]
	h := mustLock(t, &q, "k", false)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, err := q.Lock(ctx, "k")
		errc <- err
	}()
	waitFor(t, "waiter queued", func() bool { return q.Waiting("k") == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock after cancel: %v, want context.Canceled", err)
	}
	if q.Waiting("k") != 0 || q.Holders("k") != 1 {
		t.Fatalf("waiting %d holders %d, want 0 and 1", q.Waiting("k"), q.Holders("k"))
	}
	h.Release()
	if q.Len() != 0 {
		t.Fatalf("Len %d, want 0 (entry leaked)", q.Len())
	}
}

func TestDeadline(t *testing.T) {
	var q keyqueue.Queue[string]
	h := mustLock(t, &q, "k", false)
	defer h.Release()
	start := time.Now() // before the deadline is set, which counts from then
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := q.LockShared(ctx, "k")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("returned after %v, before the deadline", d)
	}
}

func TestDoneContextNeverAcquires(t *testing.T) {
	var q keyqueue.Queue[string]
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := q.Lock(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want Canceled", err)
	}
	if q.Len() != 0 {
		t.Fatalf("Len %d, want 0", q.Len())
	}
}

// TestCancelHeadUnblocksShared: shared held, exclusive queued, shared queued
// behind it. When the exclusive gives up, the shared one behind it can join
// the holders at once.
func TestCancelHeadUnblocksShared(t *testing.T) {
	var q keyqueue.Queue[string]
	s := mustLock(t, &q, "k", true)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, err := q.Lock(ctx, "k")
		errc <- err
	}()
	waitFor(t, "exclusive queued", func() bool { return q.Waiting("k") == 1 })
	got := make(chan *keyqueue.Ticket[string])
	go func() { got <- mustLock(t, &q, "k", true) }()
	waitFor(t, "shared queued", func() bool { return q.Waiting("k") == 2 })
	cancel()
	<-errc
	s2 := <-got // granted while s is still held
	if q.Holders("k") != 2 {
		t.Fatalf("holders %d, want 2", q.Holders("k"))
	}
	s.Release()
	s2.Release()
	if q.Len() != 0 {
		t.Fatalf("Len %d, want 0", q.Len())
	}
}

// TestGrantCancelRace releases the holder and cancels the waiter at the same
// moment, many times: whichever wins, the waiter either holds the key or
// returned an error having left nothing behind.
func TestGrantCancelRace(t *testing.T) {
	var q keyqueue.Queue[int]
	n := 2000
	if testing.Short() {
		n = 200
	}
	for i := range n {
		h, _ := q.TryLock(i % 3)
		ctx, cancel := context.WithCancel(context.Background())
		type res struct {
			tk  *keyqueue.Ticket[int]
			err error
		}
		out := make(chan res, 1)
		go func() {
			tk, err := q.Lock(ctx, i%3)
			out <- res{tk, err}
		}()
		waitFor(t, "waiter queued", func() bool { return q.Waiting(i%3) == 1 })
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); h.Release() }()
		go func() { defer wg.Done(); cancel() }()
		wg.Wait()
		r := <-out
		if r.err == nil {
			r.tk.Release()
		}
		if q.Len() != 0 {
			t.Fatalf("iteration %d: Len %d after the race, want 0", i, q.Len())
		}
	}
}

// TestNoGoroutinePerWaiter checks that waiting costs only the caller's own
// goroutine.
func TestNoGoroutinePerWaiter(t *testing.T) {
	var q keyqueue.Queue[string]
	h := mustLock(t, &q, "k", false)
	base := runtime.NumGoroutine()
	const n = 100
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mustLock(t, &q, "k", false).Release()
		}()
	}
	waitFor(t, "all queued", func() bool { return q.Waiting("k") == n })
	if g := runtime.NumGoroutine() - base; g > n {
		t.Errorf("%d goroutines for %d waiters", g, n)
	}
	h.Release()
	wg.Wait()
	if q.Len() != 0 {
		t.Fatalf("Len %d, want 0", q.Len())
	}
}

func TestDoubleReleasePanics(t *testing.T) {
	var q keyqueue.Queue[string]
	tk := mustLock(t, &q, "k", false)
	tk.Release()
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("second Release did not panic")
		}
	}()
	tk.Release()
}

// TestStress runs goroutines over a few keys with random modes, random holding
// times and random cancellations, and checks the exclusion invariant at every
// grant, then that nothing is left in the queue.
func TestStress(t *testing.T) {
	const (
		workers = 16
		keys    = 4
	)
	ops := 1500
	if testing.Short() {
		ops = 200
	}
	var q keyqueue.Queue[int]
	type counters struct{ excl, shared atomic.Int32 }
	var c [keys]counters
	var granted, cancelled atomic.Int64
	deadline := time.Now().Add(90 * time.Second)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for range ops {
				if time.Now().After(deadline) {
					return
				}
				k := rng.IntN(keys)
				shared := rng.IntN(3) == 0
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				switch rng.IntN(4) {
				case 0:
					ctx, cancel = context.WithTimeout(ctx, time.Duration(rng.IntN(200))*time.Microsecond)
				case 1:
					ctx, cancel = context.WithCancel(ctx)
					if rng.IntN(2) == 0 {
						go cancel() // cancel at a random moment of the wait
					}
				}
				var tk *keyqueue.Ticket[int]
				var err error
				if shared {
					tk, err = q.LockShared(ctx, k)
				} else {
					tk, err = q.Lock(ctx, k)
				}
				if err != nil {
					cancel()
					if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("unexpected error %v", err)
						return
					}
					cancelled.Add(1)
					continue
				}
				granted.Add(1)
				if shared {
					c[k].shared.Add(1)
					if c[k].excl.Load() != 0 {
						t.Errorf("key %d: shared granted while held exclusively", k)
					}
				} else {
					if n := c[k].excl.Add(1); n != 1 || c[k].shared.Load() != 0 {
						t.Errorf("key %d: exclusive granted with %d exclusive and %d shared holders", k, n, c[k].shared.Load())
					}
				}
				if rng.IntN(4) == 0 {
					runtime.Gosched()
				}
				if shared {
					c[k].shared.Add(-1)
				} else {
					c[k].excl.Add(-1)
				}
				tk.Release()
				cancel()
			}
		}()
	}
	wg.Wait()
	if q.Len() != 0 {
		t.Fatalf("Len %d after the stress, want 0", q.Len())
	}
	t.Logf("granted %d, gave up %d", granted.Load(), cancelled.Load())
	if granted.Load() == 0 {
		t.Fatal("nothing was granted")
	}
}

func BenchmarkUncontended(b *testing.B) {
	var q keyqueue.Queue[int64]
	ctx := context.Background()
	b.ReportAllocs()
	var i int64
	for b.Loop() {
		i++
		tk, err := q.Lock(ctx, i)
		if err != nil {
			b.Fatal(err)
		}
		tk.Release()
	}
}

func BenchmarkOneKeyParallel(b *testing.B) {
	var q keyqueue.Queue[int64]
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tk, err := q.Lock(ctx, 1)
			if err != nil {
				b.Fatal(err)
			}
			tk.Release()
		}
	})
}

func BenchmarkManyKeysParallel(b *testing.B) {
	var q keyqueue.Queue[int64]
	ctx := context.Background()
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tk, err := q.Lock(ctx, next.Add(1)%1024)
			if err != nil {
				b.Fatal(err)
			}
			tk.Release()
		}
	})
}

// Example shows two goroutines of one process contending for a key: the
// second waits in memory until the first releases.
func Example() {
	var q keyqueue.Queue[string]
	ctx := context.Background()
	first, _ := q.Lock(ctx, "order-42")
	granted := make(chan struct{})
	go func() {
		second, _ := q.Lock(ctx, "order-42")
		fmt.Println("second holder in")
		second.Release()
		close(granted)
	}()
	for q.Waiting("order-42") == 0 {
		runtime.Gosched()
	}
	fmt.Println("first holder out, waiting:", q.Waiting("order-42"))
	first.Release()
	<-granted
	fmt.Println("keys in use:", q.Len())
	// Output:
	// first holder out, waiting: 1
	// second holder in
	// keys in use: 0
}

// Ticket.Waiting tells a holder how many wait behind it, as Queue.Waiting
// does, including after waiters give up.
func TestTicketWaiting(t *testing.T) {
	var q keyqueue.Queue[string]
	first := mustLock(t, &q, "k", false)
	if n := first.Waiting(); n != 0 {
		t.Fatalf("Waiting %d with nobody queued", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	for range 2 {
		go func() {
			tk, err := q.Lock(ctx, "k")
			if err == nil {
				tk.Release()
			}
			done <- err
		}()
	}
	waitFor(t, "two waiters", func() bool { return first.Waiting() == 2 && q.Waiting("k") == 2 })
	cancel()
	for range 2 {
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("waiter: %v, want context.Canceled", err)
		}
	}
	if n := first.Waiting(); n != 0 {
		t.Fatalf("Waiting %d after the waiters gave up", n)
	}
	first.Release()
}
