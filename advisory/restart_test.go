package advisory_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// TestAcquireAfterRestart: after a server restart every idle connection of
// the pool is dead. The acquires that meet them replace them (nothing was
// sent that could have taken a lock), so 100 acquires right after the
// restart, of both session kinds, return 0 errors; a waiter whose backend an
// operator terminates while it waits still fails, with an error that says
// so: that is a statement cut short, not a connection found dead.
func TestAcquireAfterRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starting and restarting a private server takes a minute or more")
	}
	srv := itest.NewServer(t, itest.Config{})
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setupOn(t, srv, driver)
		db, admin := e.db, e.admin
		db.SetMaxIdleConns(32)
		kinds := map[string]*advisory.Locker{
			"multiplexed": advisory.New(db),
			"dedicated":   advisory.New(db, advisory.WithDedicatedSessions()),
		}
		ctx := timeout(t, 2*time.Minute)
		// Fill the pool with idle connections that both Lockers have used.
		for _, l := range kinds {
			if errs := acquireMany(ctx, l, 32, 32, "warm"); len(errs) > 0 {
				t.Fatalf("before the restart: %v", errs[0])
			}
		}
		idle := db.Stats().Idle
		if err := srv.Restart(ctx); err != nil {
			t.Fatalf("Restart: %v", err)
		}
		for name, l := range kinds {
			errs := acquireMany(ctx, l, 100, 8, name)
			t.Logf("%s: 100 acquires after the restart (%d idle connections died): %d errors", name, idle, len(errs))
			for _, err := range errs[:min(len(errs), 5)] {
				t.Errorf("%s: %v", name, err)
			}
		}

		// The operator's kill of a waiting backend is not a dead connection.
		// (admin's own idle connections died too: drop them.)
		admin.SetMaxIdleConns(0)
		admin.SetMaxIdleConns(2)
		for name, l := range kinds {
			key := testKey(t)
			holder, err := admin.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := holder.ExecContext(ctx, "SELECT pg_advisory_lock($1)", int64Of(key)); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				lease, err := l.Lock(ctx, key)
				if err == nil {
					lease.Release(context.Background())
					err = fmt.Errorf("granted")
				}
				done <- err
			}()
			waiter := waitingBackend(t, admin, key)
			testkit.TerminateBackend(t, admin, waiter)
			select {
			case err := <-done:
				if err == nil || err.Error() == "granted" {
					t.Errorf("%s: Lock whose waiting backend was terminated: %v, want an error", name, err)
				} else {
					t.Logf("%s: Lock whose waiting backend was terminated: %v", name, err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("%s: Lock whose waiting backend was terminated has not returned after 20 s (retried?)", name)
			}
			holder.ExecContext(ctx, "SELECT pg_advisory_unlock_all()")
			holder.Close()
		}
	})
}

// acquireMany runs n Lock+Release of distinct keys on g goroutines and
// returns the errors.
func acquireMany(ctx context.Context, l *advisory.Locker, n, g int, tag string) []error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	next := make(chan int)
	for range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				lease, err := l.Lock(ctx, keyspace.Hash(fmt.Sprintf("restart-%s-%d", tag, i)))
				if err == nil {
					err = lease.Release(ctx)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("acquire %d: %w", i, err))
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errs
}

// waitingBackend returns the pid of the backend that waits for key,
// failing the test after 10 s without one.
func waitingBackend(t *testing.T, admin *sql.DB, key keyspace.Key) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if pids := lockRows(t, admin, key, false); len(pids) > 0 {
			return pids[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no backend waits for %v", key)
	return 0
}
