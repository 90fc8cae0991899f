package mocktest_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/mocktest"
)

// fencingRun takes, with l: keyA, keyA again, LockAll(keyB, keyA), and a
// refused TryLock of keyB while another lease holds it; it returns the
// tokens of the three grants and the try's error.
func fencingRun(t *testing.T, l *advisory.Locker, holdB func() func()) ([][]int64, error) {
	t.Helper()
	ctx := context.Background()
	var got [][]int64
	for _, lock := range []func() (*advisory.Lease, error){
		func() (*advisory.Lease, error) { return l.Lock(ctx, keyA) },
		func() (*advisory.Lease, error) { return l.Lock(ctx, keyA) },
		func() (*advisory.Lease, error) { return l.LockAll(ctx, keyB, keyA) },
	} {
		lease, err := lock()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, lease.Tokens())
		if err := lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	release := holdB()
	defer release()
	_, err := l.TryLock(ctx, keyB)
	return got, err
}

// TestFencing: with WithFencing the mock expects the fenced statements and
// hands out the tokens a fresh fencing table on a real server hands out.
func TestFencing(t *testing.T) {
	// A fresh table in the server's first lifetime: epoch 1, so tokens
	// are 1<<40 + 1, + 2, ... over all keys; LockAll gives every key of
	// the set the same token.
	const e = 1 << 40
	want := [][]int64{{e + 1}, {e + 2}, {e + 3, e + 3}}
	check := func(t *testing.T, got [][]int64, tryErr error) {
		t.Helper()
		if !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("tokens %v; want %v", got, want)
		}
		if !errors.Is(tryErr, advisory.ErrNotAcquired) {
			t.Errorf("refused TryLock = %v; want ErrNotAcquired", tryErr)
		}
	}
	for _, table := range []string{"", "public.fence"} {
		t.Run("mock/"+table, func(t *testing.T) {
			_, m := mocktest.New(t, mocktest.WithFencing(table))
			m.ExpectLock(keyA)
			m.ExpectUnlock(keyA, true)
			m.ExpectLock(keyA)
			m.ExpectUnlock(keyA, true)
			m.ExpectLockAll(keyA, keyB)
			m.ExpectUnlockAll(keyA, keyB)
			m.ExpectTryLock(keyB, false)
			got, err := fencingRun(t, m.Locker(), func() func() { return func() {} })
			check(t, got, err)
			if m.Token(keyA) != e+3 || m.Token(keyB) != e+3 || m.Token(keyC) != 0 {
				t.Errorf("Token = %d, %d, %d; want e+3, e+3, 0", m.Token(keyA), m.Token(keyB), m.Token(keyC))
			}
		})
	}
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		db := itest.Open(t, driverName)
		ctx := context.Background()
		if err := advisory.CreateFenceTable(ctx, db, "public.fence"); err != nil {
			t.Fatal(err)
		}
		l := advisory.New(db, advisory.WithFencing("public.fence"))
		got, err := fencingRun(t, l, func() func() {
			other, err := advisory.New(db).Lock(ctx, keyB)
			if err != nil {
				t.Fatal(err)
			}
			return func() { other.Release(ctx) }
		})
		check(t, got, err)
		testkit.WaitConnsIdle(t, db)
		testkit.WaitNoAdvisoryLocks(t, db)
	})
}

// TestNoFenceTable: a missing fencing table is advisory.ErrNoFenceTable from
// the mock as from a real server.
func TestNoFenceTable(t *testing.T) {
	ctx := context.Background()
	_, m := mocktest.New(t, mocktest.WithFencing(""))
	m.ExpectLockNoFenceTable(keyA)
	if _, err := m.Locker().Lock(ctx, keyA); !errors.Is(err, advisory.ErrNoFenceTable) {
		t.Errorf("mock: Lock = %v; want ErrNoFenceTable", err)
	}
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		db := itest.Open(t, driverName)
		if _, err := advisory.New(db, advisory.WithFencing("")).Lock(ctx, keyA); !errors.Is(err, advisory.ErrNoFenceTable) {
			t.Errorf("server: Lock = %v; want ErrNoFenceTable", err)
		}
		testkit.WaitConnsIdle(t, db)
		testkit.WaitNoAdvisoryLocks(t, db)
	})
}
