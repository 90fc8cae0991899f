package advisory_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/faultproxy"
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
			// Sorted: the bigint key first, then the pair; every key of
			// the set has the acquisition's one token.
			toks := all.Tokens()
			first := epochOf(t, e.db, table)<<40 + 1
			if ks := all.Keys(); len(toks) != 2 || ks[0] != key || toks[0] != all.Token() || toks[1] != all.Token() {
				t.Fatalf("keys %v tokens %v token %d; want the token for both keys", ks, toks, all.Token())
			}
			if a.Token() != first {
				t.Fatalf("key's first token %d, want %d", a.Token(), first)
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

// epochOf reads the epoch row of a fencing table ("" for the default).
func epochOf(t *testing.T, db *sql.DB, table string) int64 {
	t.Helper()
	if table == "" {
		table = advisory.DefaultFenceTable
	}
	var epoch int64
	if err := db.QueryRow("SELECT epoch FROM " + table).Scan(&epoch); err != nil {
		t.Fatalf("epoch of %s: %v", table, err)
	}
	return epoch
}

// TestFencingTableErrors: a table without its epoch row, a table of the
// earlier per-key layout and a table of another layout fail with errors
// that name the fix, from the acquire and from CreateFenceTable;
// CreateFenceTable puts a missing epoch row back, and MigrateFenceTable
// turns the per-key layout into the current one with every later token
// above the old ones.
func TestFencingTableErrors(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 60*time.Second)
		key := testKey(t)
		if err := advisory.CreateFenceTable(ctx, e.db, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.ExecContext(ctx, "DELETE FROM pgadvisory_fence"); err != nil {
			t.Fatal(err)
		}
		l := advisory.New(e.db, advisory.WithFencing(""))
		for _, lock := range []func() (*advisory.Lease, error){
			func() (*advisory.Lease, error) { return l.Lock(ctx, key) },
			func() (*advisory.Lease, error) { return l.TryLock(ctx, key) },
			func() (*advisory.Lease, error) { return l.LockAll(ctx, key, keyspace.Pair(7, 8)) },
		} {
			if _, err := lock(); !errors.Is(err, advisory.ErrNoFenceEpoch) || !strings.Contains(err.Error(), "CreateFenceTable") {
				t.Fatalf("without the epoch row: %v, want ErrNoFenceEpoch naming CreateFenceTable", err)
			}
		}
		if err := advisory.CreateFenceTable(ctx, e.db, ""); err != nil {
			t.Fatal(err)
		}
		lease, err := l.Lock(ctx, key)
		if err != nil {
			t.Fatalf("after CreateFenceTable again: %v", err)
		}
		lease.Release(ctx)

		// The per-key layout of the earlier version, with a high token.
		const oldHigh = 5<<40 + 1234
		for _, stmt := range []string{
			"CREATE TABLE old_fence (kind int2 NOT NULL CHECK (kind IN (0, 1, 2)), key int8 NOT NULL, token int8 NOT NULL, boot text, PRIMARY KEY (kind, key))",
			"INSERT INTO old_fence VALUES (0, 0, 5, 'x'), (1, 42, " + strconv.Itoa(oldHigh) + ", NULL), (2, 7, " + strconv.Itoa(5<<40+3) + ", NULL)",
		} {
			if _, err := e.db.ExecContext(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
		if err := advisory.CreateFenceTable(ctx, e.db, "old_fence"); !errors.Is(err, advisory.ErrFenceOldLayout) || !strings.Contains(err.Error(), "FenceMigrateSQL") {
			t.Fatalf("CreateFenceTable on the old layout = %v, want ErrFenceOldLayout naming FenceMigrateSQL", err)
		}
		old := advisory.New(e.db, advisory.WithFencing("old_fence"))
		if _, err := old.Lock(ctx, key); !errors.Is(err, advisory.ErrFenceOldLayout) {
			t.Fatalf("Lock on the old layout = %v, want ErrFenceOldLayout", err)
		}
		if err := advisory.MigrateFenceTable(ctx, e.db, "old_fence"); err != nil {
			t.Fatal(err)
		}
		lease, err = old.Lock(ctx, key)
		if err != nil {
			t.Fatalf("Lock after MigrateFenceTable: %v", err)
		}
		if lease.Token() <= oldHigh {
			t.Fatalf("first token after the migration %d, not above the old table's %d", lease.Token(), oldHigh)
		}
		t.Logf("after the migration: token %d (epoch %d), the old table's highest %d (epoch 5)", lease.Token(), lease.Token()>>40, oldHigh)
		lease.Release(ctx)

		// Another layout altogether.
		if _, err := e.db.ExecContext(ctx, "CREATE TABLE other_fence (id int PRIMARY KEY, note text)"); err != nil {
			t.Fatal(err)
		}
		if err := advisory.CreateFenceTable(ctx, e.db, "other_fence"); !errors.Is(err, advisory.ErrFenceLayout) {
			t.Fatalf("CreateFenceTable on another layout = %v, want ErrFenceLayout", err)
		}
		if _, err := advisory.New(e.db, advisory.WithFencing("other_fence")).Lock(ctx, key); !errors.Is(err, advisory.ErrFenceLayout) {
			t.Fatalf("Lock on another layout = %v, want ErrFenceLayout", err)
		}
		// A name whose sequence's name would not fit in 63 bytes.
		if _, err := advisory.FenceTableSQL(strings.Repeat("x", 60)); !errors.Is(err, advisory.ErrBadFenceTable) {
			t.Fatalf("a table name of 60 bytes = %v, want ErrBadFenceTable", err)
		}
	})
}

// TestFencingTimeZones: sessions with different TimeZone and DateStyle
// settings agree on the server lifetime, so they share one epoch (a plain
// pg_postmaster_start_time()::text does not: shown here too).
func TestFencingTimeZones(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 60*time.Second)
		if err := advisory.CreateFenceTable(ctx, e.db, ""); err != nil {
			t.Fatal(err)
		}
		l := advisory.New(e.db, advisory.WithFencing(""))
		key := testKey(t)
		var texts []string
		var last int64
		for i, tz := range []string{"UTC", "Asia/Tokyo", "America/Los_Angeles"} {
			style := []string{"ISO, MDY", "SQL, DMY", "Postgres, MDY"}[i]
			if _, err := e.db.ExecContext(ctx, "ALTER DATABASE "+e.dbname+" SET TimeZone = '"+tz+"'"); err != nil {
				t.Fatal(err)
			}
			if _, err := e.db.ExecContext(ctx, "ALTER DATABASE "+e.dbname+" SET DateStyle = '"+style+"'"); err != nil {
				t.Fatal(err)
			}
			e.db.SetMaxIdleConns(0) // close the sessions: new ones take the settings
			e.db.SetMaxIdleConns(2)
			var text string
			if err := e.db.QueryRowContext(ctx, "SELECT pg_postmaster_start_time()::text").Scan(&text); err != nil {
				t.Fatal(err)
			}
			texts = append(texts, text)
			lease, err := l.Lock(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if lease.Token() != last+1 && last != 0 {
				t.Fatalf("TimeZone %s: token %d after %d: the epoch moved", tz, lease.Token(), last)
			}
			last = lease.Token()
			lease.Release(ctx)
		}
		if epoch := epochOf(t, e.db, ""); epoch != 1 {
			t.Fatalf("epoch %d after three TimeZones, want 1", epoch)
		}
		if texts[0] == texts[1] {
			t.Fatalf("pg_postmaster_start_time()::text %q is the same under two TimeZones: the check shows nothing", texts[0])
		}
		t.Logf("::text under three TimeZones: %q; one epoch for all", texts)
	})
}

// TestFencingMonotonic: 8 connections take four keys over and over; the tokens,
// in the order the holders got the lock, strictly increase per key (8 x
// 1,000 by default, the count, spread over four keys); all keys
// draw from one sequence, so together the tokens are E<<40 + 1 .. E<<40 +
// 8,000, each once.
func TestFencingMonotonic(t *testing.T) {
	const conns = 8
	per := 1000 // the count; PGADVISORY_FENCE_ACQUISITIONS overrides it
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
		keys := []keyspace.Key{testKey(t), keyspace.Pair(1, 2), testKey(t), keyspace.Pair(3, 4)}
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
		var all []int64
		for k, seq := range seqs {
			total += len(seq)
			all = append(all, seq...)
			for i := 1; i < len(seq); i++ {
				if seq[i] <= seq[i-1] {
					t.Fatalf("key %v: token %d after %d", keys[k], seq[i], seq[i-1])
				}
			}
		}
		// One server lifetime, no crash: the tokens of all keys together
		// are the epoch's first ones, without a gap or a repeat.
		slices.Sort(all)
		first := epochOf(t, e.db, "")<<40 + 1
		for i, tok := range all {
			if tok != first+int64(i) {
				t.Fatalf("token %d of %d (sorted) is %d, want %d", i, len(all), tok, first+int64(i))
			}
		}
		counts := make([]int, len(seqs))
		for k, seq := range seqs {
			counts[k] = len(seq)
		}
		t.Logf("%d acquisitions from %d connections in %v: tokens strictly increasing per key, all keys together the epoch's first tokens without a gap (acquisitions per key %v)",
			total, conns, time.Since(start).Round(time.Millisecond), counts)
	})
}

// TestStaleWriterFaults: the stale-writer acceptance, 500 trials per
// driver (PGADVISORY_STALE_TRIALS overrides; -short runs 48), run by 8
// workers at once on keys of their own. In each trial holder A acquires and
// is cut off between deciding and writing, without noticing: its backend is
// terminated, and in every fourth trial its network path is blackholed by a
// proxy first (a partition while the server drops the session), healed only
// after B has written. B acquires and writes, through Lease.Tx and to a
// store outside the database that rejects tokens lower than the highest it
// has seen. Then A writes both ways: Lease.Tx must fail with ErrLockLost and
// the store must reject A's token.
func TestStaleWriterFaults(t *testing.T) {
	const workers = 8
	trials := 500
	if n, err := strconv.Atoi(os.Getenv("PGADVISORY_STALE_TRIALS")); err == nil && n > 0 {
		trials = n
	} else if testing.Short() {
		trials = 48
	}
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 5*time.Minute)
		if _, err := e.admin.ExecContext(ctx, `CREATE TABLE stale_writes (holder text, worker int, trial int)`); err != nil {
			t.Fatal(err)
		}
		if err := advisory.CreateFenceTable(ctx, e.db, ""); err != nil {
			t.Fatal(err)
		}
		srv := itest.Shared(t)
		lb := advisory.New(e.db, advisory.WithFencing(""))
		var mu sync.Mutex
		var terminated, blackholed, rejected, acceptedTx, acceptedStore int
		start := time.Now()
		var wg sync.WaitGroup
		for w := range workers {
			// A reaches the server through a proxy of its own.
			p, err := faultproxy.New(srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			pa := itest.OpenDSN(t, driver, srv.DSNAt(p.Addr(), e.dbname))
			t.Cleanup(func() { _ = p.Close() })
			la := advisory.New(pa, advisory.WithKeepAlive(time.Hour), advisory.WithFencing(""))
			key := testKey(t)
			store := &fencedStore{}
			n := trials / workers
			if w < trials%workers {
				n++
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range n {
					hole := i%4 == 3
					if err := staleTrial(ctx, e, la, lb, p, key, store, w, i, hole); err != nil {
						mu.Lock()
						if errors.Is(err, errStaleTx) {
							acceptedTx++
						} else if errors.Is(err, errStaleStore) {
							acceptedStore++
						}
						mu.Unlock()
						t.Errorf("worker %d trial %d (blackhole %v): %v", w, i, hole, err)
						return
					}
					mu.Lock()
					terminated++
					if hole {
						blackholed++
					}
					rejected++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		var stale, good int
		if err := e.admin.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE holder = 'a'), count(*) FILTER (WHERE holder = 'b') FROM stale_writes`).Scan(&stale, &good); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d trials by %d workers in %v; faults: %d holders cut off (%d backends terminated, %d of them behind a blackholed network path); stale writes accepted: %d through Lease.Tx (table count %d), %d by the outside store; %d stale tokens rejected by the outside store; %d writes by the new holders",
			trials, workers, time.Since(start).Round(time.Millisecond), terminated, terminated, blackholed, acceptedTx, stale, acceptedStore, rejected, good)
		if stale != 0 || acceptedTx != 0 || acceptedStore != 0 || good != trials || rejected != trials {
			t.Fatalf("stale %d/%d/%d, good %d, rejected %d of %d trials", stale, acceptedTx, acceptedStore, good, rejected, trials)
		}
	})
}

var (
	errStaleTx    = errors.New("stale write accepted through Lease.Tx")
	errStaleStore = errors.New("stale token accepted by the outside store")
)

// staleTrial runs one trial of TestStaleWriterFaults.
func staleTrial(ctx context.Context, e *env, la, lb *advisory.Locker, p *faultproxy.Proxy, key keyspace.Key, store *fencedStore, w, i int, hole bool) error {
	insert := func(holder string) func(tx *sql.Tx) error {
		return func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO stale_writes VALUES ($1, $2, $3)`, holder, w, i)
			return err
		}
	}
	a, err := la.Lock(ctx, key)
	if err != nil {
		return fmt.Errorf("A's Lock: %w", err)
	}
	// A has decided to write; now it is cut off.
	if hole {
		p.Blackhole()
	}
	var ok bool
	if err := e.admin.QueryRowContext(ctx, `SELECT pg_terminate_backend($1)`, a.PID()).Scan(&ok); err != nil || !ok {
		return fmt.Errorf("pg_terminate_backend(%d): %v %w", a.PID(), ok, err)
	}
	b, err := lb.Lock(ctx, key)
	if err != nil {
		return fmt.Errorf("B's Lock: %w", err)
	}
	defer b.Release(ctx)
	if !store.write(b.Token()) {
		return fmt.Errorf("the store refused the new holder's token %d", b.Token())
	}
	if err := b.Tx(ctx, insert("b")); err != nil {
		return fmt.Errorf("B's write: %w", err)
	}
	if hole {
		p.Forward() // the partition heals: A wakes up
	}
	err = a.Tx(ctx, insert("a"))
	if !errors.Is(err, advisory.ErrLockLost) {
		return fmt.Errorf("%w: %v", errStaleTx, err)
	}
	if store.write(a.Token()) {
		return fmt.Errorf("%w: token %d after %d", errStaleStore, a.Token(), b.Token())
	}
	if err := a.Release(ctx); !errors.Is(err, advisory.ErrLockLost) {
		return fmt.Errorf("Release of the cut-off lease = %v", err)
	}
	return b.Release(ctx)
}
