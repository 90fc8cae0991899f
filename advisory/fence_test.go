package advisory_test

import (
	"errors"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

func TestFencing(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 60*time.Second)
		key := testKey(t)
		if _, err := advisory.New(e.db, advisory.WithFencing("")).Lock(ctx, key); !errors.Is(err, advisory.ErrNoFenceTable) {
			t.Fatalf("Lock without the table = %v, want ErrNoFenceTable", err)
		}
		if _, err := advisory.New(e.db, advisory.WithFencing(`x"; DROP TABLE y`)).Lock(ctx, key); !errors.Is(err, advisory.ErrBadFenceTable) {
			t.Fatalf("bad table name = %v", err)
		}
		if err := advisory.CreateFenceTable(ctx, e.db, ""); err != nil {
			t.Fatal(err)
		}
		if err := advisory.CreateFenceTable(ctx, e.db, "public.my_fence"); err != nil {
			t.Fatal(err)
		}
		for _, table := range []string{"", "public.my_fence"} {
			l := advisory.New(e.db, advisory.WithFencing(table))
			var last int64
			next := func(lease *advisory.Lease, err error) *advisory.Lease {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
				if lease.Token() <= last {
					t.Fatalf("token %d after %d", lease.Token(), last)
				}
				last = lease.Token()
				return lease
			}
			a := next(l.Lock(ctx, key))
			if _, err := l.TryLock(ctx, key); !errors.Is(err, advisory.ErrNotAcquired) {
				t.Fatal(err)
			}
			if err := a.Release(ctx); err != nil {
				t.Fatal(err)
			}
			// The refused try took no token: the next one follows directly.
			b := next(l.TryLock(ctx, key))
			if b.Token() != a.Token()+1 {
				t.Fatalf("token %d after %d and a refused try", b.Token(), a.Token())
			}
			b.Release(ctx)
			s1 := next(l.LockShared(ctx, key))
			s2 := next(l.TryLockShared(ctx, key))
			s1.Release(ctx)
			s2.Release(ctx)
			other := keyspace.Pair(5, 6)
			all := next(l.LockAll(ctx, other, key))
			// Sorted: the bigint key first, then the pair; keys count
			// independently, so the pair's first token is 1.
			toks := all.Tokens()
			if ks := all.Keys(); len(toks) != 2 || ks[0] != key || toks[0] != all.Token() || toks[1] != 1 {
				t.Fatalf("keys %v tokens %v token %d", ks, toks, all.Token())
			}
			if err := all.Release(ctx); err != nil {
				t.Fatal(err)
			}
			plain, err := advisory.New(e.db).TryLock(ctx, key)
			if err != nil || plain.Token() != 0 || plain.Tokens() != nil {
				t.Fatalf("unfenced lease: %v token %d", err, plain.Token())
			}
			plain.Release(ctx)
		}
	})
}

// TestFencingMonotonic: 8 connections take one key over and over; the tokens,
// in the order the holders got the lock, strictly increase. A second key
// counts on its own.
func TestFencingMonotonic(t *testing.T) {
	const conns = 8
	per := 250 // PGADVISORY_FENCE_ACQUISITIONS=1000 for the long run
	if n, err := strconv.Atoi(os.Getenv("PGADVISORY_FENCE_ACQUISITIONS")); err == nil && n > 0 {
		per = n
	} else if testing.Short() {
		per = 25
	}
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		e.db.SetMaxIdleConns(conns)
		ctx := timeout(t, 5*time.Minute)
		if err := advisory.CreateFenceTable(ctx, e.db, ""); err != nil {
			t.Fatal(err)
		}
		l := advisory.New(e.db, advisory.WithFencing(""))
		keys := []keyspace.Key{testKey(t), keyspace.Pair(1, 2)}
		seqs := make([][]int64, len(keys)) // appended while holding the key
		start := time.Now()
		var wg sync.WaitGroup
		for c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range per {
					k := (c + i) % len(keys)
					lease, err := l.Lock(ctx, keys[k])
					if err != nil {
						t.Errorf("Lock: %v", err)
						return
					}
					seqs[k] = append(seqs[k], lease.Token())
					if err := lease.Release(ctx); err != nil {
						t.Errorf("Release: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		total := 0
		for k, seq := range seqs {
			total += len(seq)
			for i := 1; i < len(seq); i++ {
				if seq[i] <= seq[i-1] {
					t.Fatalf("key %v: token %d after %d", keys[k], seq[i], seq[i-1])
				}
			}
			if len(seq) > 0 && (seq[0] != 1 || seq[len(seq)-1] != int64(len(seq))) {
				t.Fatalf("key %v: tokens from %d to %d for %d acquisitions", keys[k], seq[0], seq[len(seq)-1], len(seq))
			}
		}
		t.Logf("%d acquisitions from %d connections in %v: tokens strictly increasing per key (%d and %d)",
			total, conns, time.Since(start).Round(time.Millisecond), len(seqs[0]), len(seqs[1]))
		if !slices.IsSorted(seqs[0]) {
			t.Fatal("unsorted")
		}
	})
}
