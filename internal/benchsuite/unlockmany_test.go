package benchsuite

import (
	"context"
	"math"
	"testing"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// TestUnlockMany checks the proposed bulk release statement on the real
// server: it releases every held key of both forms, extremes included,
// counts only the keys the session held, and works in shared mode.
func TestUnlockMany(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		dsn := itest.DSN(t)
		db := itest.OpenDSN(t, driver, dsn)
		admin := itest.OpenDSN(t, "postgres", dsn)
		ctx := context.Background()
		style := sqltext.StyleOf(db.Driver())
		keys := []keyspace.Key{
			keyspace.Int64(math.MinInt64), keyspace.Int64(-1), keyspace.Int64(0), keyspace.Int64(math.MaxInt64),
			keyspace.Pair(math.MinInt32, math.MinInt32), keyspace.Pair(-1, 7), keyspace.Pair(math.MaxInt32, -1),
		}
		for _, shared := range []bool{false, true} {
			c, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Hold all but the last key.
			var n int64
			var pid int
			q, args := sqltext.LockAll(style, sqltext.Mode{Shared: shared}, keys[:len(keys)-1], 0)
			if err := c.QueryRowContext(ctx, q, args...).Scan(&n, &pid); err != nil || n != int64(len(keys)-1) {
				t.Fatalf("shared=%v: lock all: %d, %v", shared, n, err)
			}
			q, args = sqltext.UnlockMany(style, shared, keys)
			if err := c.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
				t.Fatalf("shared=%v: unlock many: %v", shared, err)
			}
			if n != int64(len(keys)-1) {
				t.Errorf("shared=%v: released %d, want %d (the held ones)", shared, n, len(keys)-1)
			}
			if err := c.QueryRowContext(ctx, q, args...).Scan(&n); err != nil || n != 0 {
				t.Errorf("shared=%v: second unlock many released %d (%v), want 0", shared, n, err)
			}
			locks, err := testkit.AdvisoryLocks(ctx, admin)
			if err != nil || len(locks) != 0 {
				t.Errorf("shared=%v: locks left after unlock many: %v %v", shared, locks, err)
			}
			c.Close()
		}
		testkit.WaitConnsIdle(t, db)
		testkit.WaitNoAdvisoryLocks(t, admin)
	})
}
