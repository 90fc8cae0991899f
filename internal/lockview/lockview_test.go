package lockview_test

import (
	"context"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/lockview"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

func TestMain(m *testing.M) { testkit.Main(m) }

var ns = keyspace.MustNamespace("lockview-test", 424242)

// TestRead holds an extreme bigint key, a namespaced pair exclusively and a
// pair shared, and reads them back decoded, in keyspace order, with pids.
func TestRead(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		db := itest.Open(t, driver)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		l := advisory.New(db)
		big, pair, other := keyspace.Int64(-9223372036854775808), ns.ID(-7), keyspace.Pair(-1, 2147483647)
		a, err := l.Lock(ctx, pair)
		if err != nil {
			t.Fatal(err)
		}
		b, err := l.LockShared(ctx, other)
		if err != nil {
			t.Fatal(err)
		}
		c, err := l.Lock(ctx, big)
		if err != nil {
			t.Fatal(err)
		}
		locks, err := lockview.Read(ctx, db, false)
		if err != nil {
			t.Fatal(err)
		}
		want := []struct {
			key    keyspace.Key
			name   string
			pid    int
			shared bool
		}{
			{big, "-9223372036854775808", c.PID(), false},
			{other, "(-1,2147483647)", b.PID(), true},
			{pair, "lockview-test/-7", a.PID(), false},
		}
		if len(locks) != len(want) {
			t.Fatalf("got %d locks, want %d: %+v", len(locks), len(want), locks)
		}
		for i, w := range want {
			g := locks[i]
			age, ageOK := g.SessionAge()
			_, waitedOK := g.Waited()
			_, inXact := g.XactAge()
			if g.Key != w.key || g.KeyName() != w.name || g.PID != w.pid || g.Shared() != w.shared || !g.Granted ||
				!ageOK || age <= 0 || waitedOK || inXact || len(g.BlockedBy) != 0 {
				t.Errorf("lock %d: %+v (name %q), want %v %q pid %d shared %v", i, g, g.KeyName(), w.key, w.name, w.pid, w.shared)
			}
		}
		for _, lease := range []*advisory.Lease{a, b, c} {
			if err := lease.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if locks, err := lockview.Read(ctx, db, false); err != nil || len(locks) != 0 {
			t.Errorf("after release: %+v, %v", locks, err)
		}
		testkit.WaitNoAdvisoryLocks(t, db)
		testkit.WaitConnsIdle(t, db)
	})
}

// TestReadWaiter: a session waiting for a held key shows how long it has
// waited, that it runs a transaction, and pg_blocking_pids names the holder.
func TestReadWaiter(t *testing.T) {
	db := itest.Open(t, "pgx")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := advisory.New(db)
	key := ns.ID(5)
	held, err := l.Lock(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	waitCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		// Another Locker: one Locker queues its own goroutines in memory.
		lease, err := advisory.New(db).Lock(waitCtx, key)
		if err == nil {
			err = lease.Release(ctx)
		}
		done <- err
	}()
	var w lockview.Lock
	deadline := time.Now().Add(20 * time.Second)
	for w.PID == 0 {
		locks, err := lockview.Read(ctx, db, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range locks {
			if !g.Granted {
				w = g
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no waiter after 20s: %+v", locks)
		}
		<-time.After(20 * time.Millisecond)
	}
	waited, ok := w.Waited()
	_, inXact := w.XactAge()
	if !ok || waited < 0 || !inXact || len(w.BlockedBy) != 1 || w.BlockedBy[0] != held.PID() {
		t.Errorf("waiter %+v: waited %v %v, in a transaction %v; want blocked by %d", w, waited, ok, inXact, held.PID())
	}
	stop()
	<-done
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.WaitNoAdvisoryLocks(t, db)
	testkit.WaitConnsIdle(t, db)
}
