package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

var lsSemNS = keyspace.MustNamespace("pglock-test-sem", 4242)

// TestLsSem: "pglock ls --sem NAME --ns NS --slots N" shows only the
// semaphore's slots, each with its number, and how many are held.
func TestLsSem(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	ctx := context.Background()
	l := advisory.New(d.db)
	sem, err := advisory.NewSemaphore(l, lsSemNS, "tenant-9", 3)
	if err != nil {
		t.Fatal(err)
	}
	a, err := sem.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release(ctx)
	b, err := sem.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release(ctx)
	// Another semaphore of the namespace is not shown.
	other, _ := advisory.NewSemaphore(l, lsSemNS, "tenant-10", 3)
	c, err := other.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release(ctx)

	r := pglock(t, d.env, "ls", "--sem", "tenant-9", "--ns", "sems", "--names", "sems=4242", "--slots", "3")
	if r.code != 0 {
		t.Fatalf("pglock ls --sem: %v", r)
	}
	for _, want := range []string{`semaphore "tenant-9": 2 of 3 slots held, 0 sessions waiting`, " slot 0 ", " slot 1 "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, " slot 2 ") || strings.Count(r.stdout, "held ") != 2 {
		t.Errorf("output shows other locks:\n%s", r.stdout)
	}

	r = pglock(t, d.env, "ls", "--json", "--sem", "tenant-9", "--ns", "4242", "--slots", "3")
	var out lsOutput
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || r.code != 0 {
		t.Fatalf("pglock ls --json --sem: %v %v", err, r)
	}
	if len(out.Locks) != 2 || out.Locks[0].Semaphore != "tenant-9" || out.Locks[0].Slot == nil {
		t.Fatalf("JSON rows: %+v", out.Locks)
	}
}

func TestLsSemArgs(t *testing.T) {
	for _, args := range [][]string{
		{"ls", "--sem", "x"},
		{"ls", "--ns", "1"},
		{"ls", "--sem", "x", "--ns", "nope"},
		{"ls", "--sem", "x", "--ns", "1", "--slots", "0"},
	} {
		if _, err := parseArgs(args, nil); err == nil {
			t.Errorf("%q: no usage error", args)
		}
	}
	c, err := parseArgs([]string{"ls", "--sem", "x", "--ns", "1", "--slots", "2"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ns := keyspace.MustNamespace("pglock-test-sem-1", 1)
	want := advisory.SemaphoreSlots(ns, "x", 2)
	got := c.semSlotKeys()
	for i, k := range want {
		if got[k] != i || len(got) != 2 {
			t.Fatalf("slot keys %v, want %v", got, want)
		}
	}
}
