package advisory_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

func TestLockRelease(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		l := advisory.New(e.db)
		ctx := timeout(t, 30*time.Second)
		for _, key := range []keyspace.Key{testKey(t), keyspace.Pair(-7, 42), keyspace.Int64(-1 << 63)} {
			lease, err := l.Lock(ctx, key)
			if err != nil {
				t.Fatalf("Lock(%v): %v", key, err)
			}
			if got := e.holders(t, key); !slices.Equal(got, []int{lease.PID()}) {
				t.Fatalf("pg_locks holders of %v = %v, want [%d]", key, got, lease.PID())
			}
			if lease.Key() != key || lease.Shared() || lease.Err() != nil {
				t.Fatalf("lease = %v shared=%v err=%v", lease.Key(), lease.Shared(), lease.Err())
			}
			if err := lease.Release(ctx); err != nil {
				t.Fatalf("Release: %v", err)
			}
			if err := lease.Release(ctx); !errors.Is(err, advisory.ErrReleased) {
				t.Fatalf("second Release = %v, want ErrReleased", err)
			}
			if !errors.Is(lease.Err(), advisory.ErrReleased) {
				t.Fatalf("Err after Release = %v", lease.Err())
			}
			select {
			case <-lease.Lost():
				t.Fatal("Lost closed by Release")
			default:
			}
			if got := e.holders(t, key); len(got) != 0 {
				t.Fatalf("still held by %v after Release", got)
			}
		}
		var nilLease *advisory.Lease
		if err := nilLease.Release(ctx); err != nil {
			t.Fatalf("nil Release: %v", err)
		}
	})
}

func TestTryLock(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		var contended, acquired int
		var mu sync.Mutex
		// Dedicated sessions: each lease its own connection and backend.
		l := advisory.New(e.db, advisory.WithDedicatedSessions(), advisory.WithHooks(advisory.Hooks{
			Contended: func(keyspace.Key, bool) { mu.Lock(); contended++; mu.Unlock() },
			Acquired:  func(keyspace.Key, bool, time.Duration) { mu.Lock(); acquired++; mu.Unlock() },
		}))
		ctx := timeout(t, 30*time.Second)
		key := testKey(t)
		held, err := l.TryLock(ctx, key)
		if err != nil {
			t.Fatalf("TryLock: %v", err)
		}
		if _, err := l.TryLock(ctx, key); !errors.Is(err, advisory.ErrNotAcquired) {
			t.Fatalf("second TryLock = %v, want ErrNotAcquired", err)
		}
		if _, err := l.TryLockShared(ctx, key); !errors.Is(err, advisory.ErrNotAcquired) {
			t.Fatalf("TryLockShared under exclusive = %v, want ErrNotAcquired", err)
		}
		// A refused try holds nothing and gives its connection back.
		if in := e.db.Stats().InUse; in != 1 {
			t.Fatalf("%d connections in use, want 1 (the lease's)", in)
		}
		if err := held.Release(ctx); err != nil {
			t.Fatal(err)
		}
		// Shared holders coexist and keep an exclusive try out.
		s1, err := l.TryLockShared(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := l.LockShared(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if !s2.Shared() || s1.PID() == s2.PID() {
			t.Fatalf("shared=%v pids %d %d", s2.Shared(), s1.PID(), s2.PID())
		}
		if got := e.holders(t, key); len(got) != 2 {
			t.Fatalf("holders %v, want two shared", got)
		}
		if _, err := l.TryLock(ctx, key); !errors.Is(err, advisory.ErrNotAcquired) {
			t.Fatalf("TryLock under shared = %v, want ErrNotAcquired", err)
		}
		for _, s := range []*advisory.Lease{s1, s2} {
			if err := s.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if contended != 3 || acquired != 3 {
			t.Fatalf("hooks: contended %d acquired %d, want 3 and 3", contended, acquired)
		}
	})
}

func TestLockAll(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		l := advisory.New(e.db)
		ctx := timeout(t, 30*time.Second)
		a, b, c := keyspace.Pair(1, 2), keyspace.Int64(5), keyspace.Int64(-3)
		lease, err := l.LockAll(ctx, a, b, c, b, a)
		if err != nil {
			t.Fatal(err)
		}
		want := []keyspace.Key{c, b, a}
		if !slices.Equal(lease.Keys(), want) || lease.Key() != c {
			t.Fatalf("Keys = %v, want %v", lease.Keys(), want)
		}
		for _, k := range want {
			if got := e.holders(t, k); !slices.Equal(got, []int{lease.PID()}) {
				t.Fatalf("holders of %v = %v", k, got)
			}
		}
		if err := lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
		// All or nothing: with b held elsewhere, a bounded LockAll holds none
		// of the keys afterwards, whether the context or lock_timeout ends it.
		other, err := l.TryLock(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		if _, err := l.LockAll(short, a, b, c); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("LockAll with b held, ctx deadline = %v", err)
		}
		lt := advisory.New(e.db, advisory.WithLockTimeout(200*time.Millisecond))
		if _, err := lt.LockAll(ctx, a, b, c); !errors.Is(err, advisory.ErrLockTimeout) {
			t.Fatalf("LockAll with b held, lock_timeout = %v", err)
		}
		for _, k := range []keyspace.Key{a, c} {
			waitFor(t, 10*time.Second, "no holder of "+k.String(), func() bool { return len(e.holders(t, k)) == 0 })
		}
		if err := other.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := l.LockAll(ctx); !errors.Is(err, advisory.ErrNoKeys) {
			t.Fatalf("LockAll() = %v", err)
		}
	})
}

func TestWaitBounds(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 30*time.Second)
		key := testKey(t)
		held, err := advisory.New(e.db).Lock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		lt := advisory.New(e.db, advisory.WithLockTimeout(150*time.Millisecond))
		start := time.Now()
		_, err = lt.Lock(ctx, key)
		if !errors.Is(err, advisory.ErrLockTimeout) || !errors.Is(err, advisory.ErrLockTimeout) {
			t.Fatalf("Lock under lock_timeout = %v, want ErrLockTimeout", err)
		}
		t.Logf("lock_timeout 150ms ended the wait after %v: %v", time.Since(start), err)
		if _, err := lt.LockShared(ctx, key); !errors.Is(err, advisory.ErrLockTimeout) {
			t.Fatalf("LockShared under lock_timeout = %v", err)
		}
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, err = advisory.New(e.db).Lock(short, key)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock under ctx deadline = %v, want DeadlineExceeded", err)
		}
		dead, cancel2 := context.WithCancel(ctx)
		cancel2()
		if _, err := advisory.New(e.db).Lock(dead, key); !errors.Is(err, context.Canceled) {
			t.Fatalf("Lock with a cancelled ctx = %v", err)
		}
		waitFor(t, 10*time.Second, "only the holder left", func() bool {
			return slices.Equal(e.holders(t, key), []int{held.PID()})
		})
		if err := held.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestNil(t *testing.T) {
	ctx := context.Background()
	var nilLocker *advisory.Locker
	for _, l := range []*advisory.Locker{advisory.New(nil), nilLocker} {
		if _, err := l.Lock(ctx, keyspace.Int64(1)); !errors.Is(err, advisory.ErrNilDB) {
			t.Fatalf("Lock = %v", err)
		}
		if err := l.Do(ctx, keyspace.Int64(1), func(context.Context) error { return nil }); !errors.Is(err, advisory.ErrNilDB) {
			t.Fatalf("Do = %v", err)
		}
	}
}
