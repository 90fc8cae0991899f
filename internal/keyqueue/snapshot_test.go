package keyqueue_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/keyqueue"
)

// TestSnapshot: a key held exclusively with an exclusive and a shared
// waiter behind it, and a key held without waiters (left out). OnWait sees
// each waiter with the number ahead of it; Waiters counts them; after the
// grants QueueWait and Queued tell who waited.
func TestSnapshot(t *testing.T) {
	var q keyqueue.Queue[string]
	type wait struct {
		key    string
		shared bool
		ahead  int
	}
	var mu sync.Mutex
	var seen []wait
	q.OnWait = func(key string, shared bool, ahead int) {
		mu.Lock()
		seen = append(seen, wait{key, shared, ahead})
		mu.Unlock()
	}
	if got := q.Snapshot(); len(got) != 0 {
		t.Fatalf("empty queue: snapshot %v", got)
	}
	head := mustLock(t, &q, "a", false)
	other := mustLock(t, &q, "b", false)
	if head.Queued() || head.QueueWait() != 0 {
		t.Fatalf("granted at once: Queued %v, QueueWait %v", head.Queued(), head.QueueWait())
	}
	got := make(chan *keyqueue.Ticket[string], 2)
	for i, shared := range []bool{false, true} {
		go func() {
			var tk *keyqueue.Ticket[string]
			var err error
			if shared {
				tk, err = q.LockShared(context.Background(), "a")
			} else {
				tk, err = q.Lock(context.Background(), "a")
			}
			if err != nil {
				t.Error(err)
			}
			got <- tk
		}()
		waitFor(t, "the waiter", func() bool { return q.Waiters() == i+1 })
	}
	time.Sleep(2 * time.Millisecond) // so that the first waiter has waited measurably
	snap := q.Snapshot()
	if len(snap) != 1 || snap[0].Key != "a" || snap[0].Holders != 1 || !snap[0].Exclusive || len(snap[0].Waiters) != 2 {
		t.Fatalf("snapshot %+v, want key a held exclusively with 2 waiters", snap)
	}
	if w := snap[0].Waiters; w[0].Shared || !w[1].Shared || w[0].Waited < w[1].Waited || w[0].Waited < time.Millisecond {
		t.Fatalf("waiters %+v, want exclusive then shared, the first waiting longer", w)
	}
	mu.Lock()
	if want := []wait{{"a", false, 0}, {"a", true, 1}}; !slices.Equal(seen, want) {
		t.Errorf("OnWait saw %v, want %v", seen, want)
	}
	mu.Unlock()
	head.Release()
	first := <-got
	if !first.Queued() || first.QueueWait() < time.Millisecond {
		t.Errorf("first waiter: Queued %v, QueueWait %v", first.Queued(), first.QueueWait())
	}
	first.Release()
	(<-got).Release()
	other.Release()
	if n := q.Waiters(); n != 0 {
		t.Errorf("Waiters = %d after every grant", n)
	}
}

// TestSnapshotCancelled: a waiter that gives up leaves Waiters and the
// snapshot.
func TestSnapshotCancelled(t *testing.T) {
	var q keyqueue.Queue[int]
	for k := range 40 { // more keys than the shards' slots: some in maps
		tk, ok := q.TryLock(k)
		if !ok {
			t.Fatal("TryLock")
		}
		defer tk.Release()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	for k := range 40 {
		go func() {
			_, err := q.Lock(ctx, k)
			done <- err
		}()
	}
	waitFor(t, "40 waiters", func() bool { return q.Waiters() == 40 })
	if snap := q.Snapshot(); len(snap) != 40 {
		t.Fatalf("snapshot of %d keys, want 40", len(snap))
	}
	cancel()
	for range 40 {
		if err := <-done; err == nil {
			t.Fatal("Lock after cancel: nil error")
		}
	}
	if n, snap := q.Waiters(), q.Snapshot(); n != 0 || len(snap) != 0 {
		t.Fatalf("after cancel: %d waiters, snapshot %v", n, snap)
	}
}
