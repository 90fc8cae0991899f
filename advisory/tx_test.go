package advisory_test

import (
	"database/sql"
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
)

func createTable(t *testing.T, e *env) {
	t.Helper()
	if _, err := e.admin.ExecContext(timeout(t, 10*time.Second), `CREATE TABLE writes (holder text, n int)`); err != nil {
		t.Fatal(err)
	}
}

func countWrites(t *testing.T, e *env, holder string) int {
	t.Helper()
	var n int
	if err := e.admin.QueryRowContext(timeout(t, 10*time.Second), `SELECT count(*) FROM writes WHERE holder = $1`, holder).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestLeaseTx(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		createTable(t, e)
		ctx := timeout(t, 30*time.Second)
		l := advisory.New(e.db, advisory.WithKeepAlive(time.Hour))
		lease, err := l.Lock(ctx, testKey(t))
		if err != nil {
			t.Fatal(err)
		}
		err = lease.Tx(ctx, func(tx *sql.Tx) error {
			var pid int
			if err := tx.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				return err
			}
			if pid != lease.PID() {
				t.Errorf("Tx on backend %d, lease on %d", pid, lease.PID())
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO writes VALUES ('a', 1)`)
			return err
		})
		if err != nil || countWrites(t, e, "a") != 1 {
			t.Fatalf("Tx: %v", err)
		}
		boom := errors.New("boom")
		err = lease.Tx(ctx, func(tx *sql.Tx) error {
			_, _ = tx.ExecContext(ctx, `INSERT INTO writes VALUES ('a', 2)`)
			return boom
		})
		if !errors.Is(err, boom) || countWrites(t, e, "a") != 1 {
			t.Fatalf("Tx with fn failing = %v (rows %d)", err, countWrites(t, e, "a"))
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Error("Tx swallowed fn's panic")
				}
			}()
			_ = lease.Tx(ctx, func(tx *sql.Tx) error {
				_, _ = tx.ExecContext(ctx, `INSERT INTO writes VALUES ('a', 3)`)
				panic("fn panics")
			})
		}()
		if countWrites(t, e, "a") != 1 || lease.Err() != nil {
			t.Fatalf("after a panic: rows %d, Err %v", countWrites(t, e, "a"), lease.Err())
		}
		if err := lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := lease.Tx(ctx, func(*sql.Tx) error { return nil }); !errors.Is(err, advisory.ErrReleased) {
			t.Fatalf("Tx after Release = %v", err)
		}
	})
}

// TestStaleWriter: holder A is cut off (its backend terminated) between
// deciding and writing, without noticing (no keepalive tick yet); B takes
// the lock and writes. A's write through Lease.Tx must fail with
// ErrLockLost and never reach the table.
func TestStaleWriter(t *testing.T) {
	trials := 40 // PGADVISORY_STALE_TRIALS=500 for the long run
	if n, err := strconv.Atoi(os.Getenv("PGADVISORY_STALE_TRIALS")); err == nil && n > 0 {
		trials = n
	} else if testing.Short() {
		trials = 10
	}
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		createTable(t, e)
		ctx := timeout(t, 120*time.Second)
		if err := advisory.CreateFenceTable(ctx, e.db, ""); err != nil {
			t.Fatal(err)
		}
		la := advisory.New(e.db, advisory.WithKeepAlive(time.Hour), advisory.WithFencing(""))
		lb := advisory.New(e.db, advisory.WithFencing(""))
		key := testKey(t)
		store := &fencedStore{}
		rejected := 0
		for range trials {
			a, err := la.Lock(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			e.terminate(t, a.PID())
			b, err := lb.Lock(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if !store.write(b.Token()) {
				t.Fatalf("the store refused the new holder's token %d", b.Token())
			}
			if err := b.Tx(ctx, func(tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO writes VALUES ('b', 1)`)
				return err
			}); err != nil {
				t.Fatalf("B's write: %v", err)
			}
			err = a.Tx(ctx, func(tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO writes VALUES ('a', 1)`)
				return err
			})
			if !errors.Is(err, advisory.ErrLockLost) {
				t.Fatalf("stale write through Tx = %v, want ErrLockLost", err)
			}
			// The stale holder's write to a store outside the database.
			if store.write(a.Token()) {
				t.Fatalf("the store took the stale token %d after %d", a.Token(), b.Token())
			}
			rejected++
			if err := a.Release(ctx); !errors.Is(err, advisory.ErrLockLost) {
				t.Fatalf("Release of the cut-off lease = %v", err)
			}
			if err := b.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		stale, good := countWrites(t, e, "a"), countWrites(t, e, "b")
		t.Logf("%d trials, %d holders cut off, %d stale writes accepted through Lease.Tx, %d stale tokens rejected by the outside store, %d writes by the new holder",
			trials, trials, stale, rejected, good)
		if stale != 0 || good != trials {
			t.Fatalf("stale %d, good %d", stale, good)
		}
	})
}

// TestTxKeepaliveReleaseRace runs Tx calls, a fast keepalive and Release at
// a random moment all at once (for the race detector): every Tx either
// commits or reports ErrReleased, and nothing is left behind.
func TestTxKeepaliveReleaseRace(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 60*time.Second)
		l := advisory.New(e.db, advisory.WithKeepAlive(10*time.Millisecond))
		for range 20 {
			lease, err := l.Lock(ctx, testKey(t))
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						err := lease.Tx(ctx, func(tx *sql.Tx) error {
							_, err := tx.ExecContext(ctx, "SELECT 1")
							return err
						})
						if errors.Is(err, advisory.ErrReleased) {
							return
						}
						if err != nil {
							t.Errorf("Tx: %v", err)
							return
						}
					}
				}()
			}
			time.Sleep(time.Duration(rand.Int64N(int64(30 * time.Millisecond)))) // random moment, not synchronisation
			if err := lease.Release(ctx); err != nil {
				t.Fatalf("Release: %v", err)
			}
			wg.Wait()
		}
	})
}

// fencedStore is a store outside the database that takes a write only with
// a token at least as high as the highest it has seen.
type fencedStore struct {
	mu      sync.Mutex
	highest int64
}

func (s *fencedStore) write(token int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if token < s.highest {
		return false
	}
	s.highest = token
	return true
}
