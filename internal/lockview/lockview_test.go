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
			if g.Key != w.key || g.KeyName() != w.name || g.PID != w.pid || g.Shared() != w.shared || !g.Granted ||
				g.BackendStart == nil || g.HeldAtMost() <= 0 || g.Waiting() != 0 {
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
