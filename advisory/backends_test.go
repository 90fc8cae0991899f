package advisory_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// TestPIDCache: after the first lock on a connection, later locks on it send
// the lock alone (the pid is known); PID still names the backend that holds
// the lock in pg_locks, in both modes, with a lock_timeout and for a try. When the
// backend dies, the acquire that meets the dead connection discards it, the
// cache forgets it, and the next lease reports its new backend.
func TestPIDCache(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		e.db.SetMaxOpenConns(1)
		l := advisory.New(e.db, advisory.WithDedicatedSessions(), advisory.WithKeepAlive(time.Hour), advisory.WithLockTimeout(5*time.Second))
		ctx := timeout(t, 30*time.Second)
		check := func(shared bool, key keyspace.Key) int {
			t.Helper()
			lock := l.Lock
			if shared {
				lock = l.LockShared
			}
			lease, err := lock(ctx, key)
			if err != nil {
				t.Fatalf("lock %v shared=%v: %v", key, shared, err)
			}
			if got := e.holders(t, key); !slices.Equal(got, []int{lease.PID()}) {
				t.Fatalf("pg_locks holders of %v = %v, want [%d] (PID)", key, got, lease.PID())
			}
			pid := lease.PID()
			if err := lease.Release(ctx); err != nil {
				t.Fatal(err)
			}
			return pid
		}
		first := check(false, keyspace.Int64(1))
		if n := advisory.CachedPIDs(l); n != 1 {
			t.Fatalf("%d cached pids after the first lock, want 1", n)
		}
		for i, k := range []keyspace.Key{keyspace.Int64(2), keyspace.Pair(3, 4), keyspace.Int64(-5)} {
			if pid := check(i%2 == 1, k); pid != first {
				t.Fatalf("lock on the same connection reports backend %d, first %d", pid, first)
			}
		}
		// A try on the known connection: refused while another session
		// holds the key (nothing held, the connection back in the pool),
		// taken once it is free.
		other, err := e.admin.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if _, err := other.ExecContext(ctx, "SELECT pg_advisory_lock(7)"); err != nil {
			t.Fatal(err)
		}
		if _, err := l.TryLock(ctx, keyspace.Int64(7)); !errors.Is(err, advisory.ErrNotAcquired) {
			t.Fatalf("TryLock of a key held elsewhere = %v, want ErrNotAcquired", err)
		}
		if in := e.db.Stats().InUse; in != 0 {
			t.Fatalf("%d connections in use after a refused try", in)
		}
		if _, err := other.ExecContext(ctx, "SELECT pg_advisory_unlock(7)"); err != nil {
			t.Fatal(err)
		}
		lease, err := l.TryLock(ctx, keyspace.Int64(7))
		if err != nil || lease.PID() != first {
			t.Fatalf("TryLock of a free key: %v, pid %d, want %d", err, lease.PID(), first)
		}
		if got := e.holders(t, keyspace.Int64(7)); !slices.Equal(got, []int{first}) {
			t.Fatalf("pg_locks holders = %v, want [%d]", got, first)
		}
		if err := lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
		e.terminate(t, first)
		// The pool's only connection is dead: the acquire that meets it may
		// fail; it must discard the connection and forget its pid.
		waitFor(t, 10*time.Second, "a lease on a new backend", func() bool {
			lease, err := l.Lock(ctx, keyspace.Int64(6))
			if err != nil {
				return false
			}
			defer lease.Release(ctx)
			if lease.PID() == first {
				t.Fatalf("lease on a terminated backend %d", first)
			}
			if got := e.holders(t, keyspace.Int64(6)); !slices.Equal(got, []int{lease.PID()}) {
				t.Fatalf("pg_locks holders = %v, want [%d]", got, lease.PID())
			}
			return true
		})
		if n := advisory.CachedPIDs(l); n != 1 {
			t.Fatalf("%d cached pids, want 1 (the dead connection forgotten)", n)
		}
	})
}
