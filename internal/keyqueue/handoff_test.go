package keyqueue_test

import (
	"context"
	"sync"
	"testing"

	"github.com/pgadvisory/pgadvisory/internal/keyqueue"
)

func TestHandoffNobodyWaiting(t *testing.T) {
	var q keyqueue.Queue[string]
	tk := mustLock(t, &q, "k", false)
	if tk.Handoff("conn") {
		t.Fatal("Handoff without a waiter reported true")
	}
	if q.Holders("k") != 1 {
		t.Fatal("a refused Handoff released the ticket")
	}
	tk.Release()
	if q.Len() != 0 {
		t.Fatalf("Len %d, want 0", q.Len())
	}
}

func TestHandoffToExclusiveWaiter(t *testing.T) {
	var q keyqueue.Queue[string]
	tk := mustLock(t, &q, "k", false)
	got := make(chan *keyqueue.Ticket[string])
	go func() { got <- mustLock(t, &q, "k", false) }()
	waitFor(t, "waiter queued", func() bool { return q.Waiting("k") == 1 })
	if !tk.Handoff("conn-7") {
		t.Fatal("Handoff to a queued exclusive waiter reported false")
	}
	next := <-got
	if next.Value() != "conn-7" {
		t.Fatalf("Value %v, want conn-7", next.Value())
	}
	if q.Holders("k") != 1 {
		t.Fatalf("holders %d during the handoff, want 1", q.Holders("k"))
	}
	if _, ok := q.TryLock("k"); ok {
		t.Fatal("the key was free after a handoff")
	}
	next.Release()
	if q.Len() != 0 {
		t.Fatalf("Len %d, want 0", q.Len())
	}
}

func TestHandoffRefusedToShared(t *testing.T) {
	var q keyqueue.Queue[string]
	tk := mustLock(t, &q, "k", false)
	got := make(chan *keyqueue.Ticket[string])
	go func() { got <- mustLock(t, &q, "k", true) }()
	waitFor(t, "waiter queued", func() bool { return q.Waiting("k") == 1 })
	if tk.Handoff("conn") {
		t.Fatal("Handoff to a shared waiter reported true")
	}
	tk.Release()
	s := <-got
	if s.Value() != nil {
		t.Fatalf("Value %v after a plain release, want nil", s.Value())
	}
	s.Release()
	if q.Len() != 0 {
		t.Fatalf("Len %d, want 0", q.Len())
	}
}

// TestHandoffCancelRace: a handed-off value is never lost. Either the
// waiter gave up first and Handoff reports false (the holder keeps it), or
// the waiter receives it, even if its context ended meanwhile.
func TestHandoffCancelRace(t *testing.T) {
	var q keyqueue.Queue[int]
	n := 2000
	if testing.Short() {
		n = 200
	}
	for i := range n {
		h, _ := q.TryLock(1)
		ctx, cancel := context.WithCancel(context.Background())
		type res struct {
			tk  *keyqueue.Ticket[int]
			err error
		}
		out := make(chan res, 1)
		go func() {
			tk, err := q.Lock(ctx, 1)
			out <- res{tk, err}
		}()
		waitFor(t, "waiter queued", func() bool { return q.Waiting(1) == 1 })
		var (
			wg     sync.WaitGroup
			handed bool
		)
		wg.Add(2)
		go func() { defer wg.Done(); handed = h.Handoff(i) }()
		go func() { defer wg.Done(); cancel() }()
		wg.Wait()
		r := <-out
		switch {
		case handed && (r.err != nil || r.tk.Value() != i):
			t.Fatalf("iteration %d: handed off but the waiter got %v, %v", i, r.err, r.tk)
		case !handed && r.err == nil:
			t.Fatalf("iteration %d: not handed off but the waiter holds the key", i)
		case handed:
			r.tk.Release()
		default:
			h.Release()
		}
		if q.Len() != 0 {
			t.Fatalf("iteration %d: Len %d, want 0", i, q.Len())
		}
	}
}
