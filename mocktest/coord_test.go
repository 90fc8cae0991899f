package mocktest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/mocktest"
)

var coordNS = keyspace.MustNamespace("mocktest-coord", 0x0c00)

func TestSemaphoreExpectations(t *testing.T) {
	_, m := mocktest.New(t)
	ctx := context.Background()
	sem, err := advisory.NewSemaphore(m.Locker(), coordNS, "tenant-1", 3)
	if err != nil {
		t.Fatal(err)
	}
	m.ExpectSemaphoreTryAcquire(coordNS, "tenant-1", 3, 1) // slot 0 held elsewhere
	m.ExpectSemaphoreTryAcquire(coordNS, "tenant-1", 3, -1, 1)
	m.ExpectSemaphoreRelease(coordNS, "tenant-1", 3, 1)

	sl, err := sem.TryAcquire(ctx)
	if err != nil || sl.Slot() != 1 {
		t.Fatalf("TryAcquire: %v, %v", sl, err)
	}
	// Slot 1 is this Locker's: only slots 0 and 2 are sent.
	if _, err := sem.TryAcquire(ctx); !errors.Is(err, advisory.ErrNotAcquired) {
		t.Fatalf("full: %v", err)
	}
	if err := sl.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestElectorExpectations(t *testing.T) {
	_, m := mocktest.New(t, mocktest.WithFencing(""))
	key := keyspace.Hash("scheduler")
	term := m.ExpectElected(key, "node-a", 0)
	m.ExpectTermEnd(key)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got int64
	el, err := m.Elector(key, func(ctx context.Context, n int64) error {
		got = n
		cancel() // stop campaigning: this test leads once
		return nil
	}, advisory.ElectAs("node-a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := el.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	if got != term {
		t.Fatalf("term %d, want %d", got, term)
	}
}
