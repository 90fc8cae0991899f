package txlock_test

import (
	"context"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// TestDeadPeerPartition: a transaction lock taken with WithDeadPeerTimeout
// by a client that is then cut off (iptables, see testkit.Cut) is freed by
// the server within about the timeout; without it (the control, only with
// PGADVISORY_TEST_PARTITION set) it is still held after 30 s.
func TestDeadPeerPartition(t *testing.T) {
	trials := testkit.PartitionTrials(t)
	srv := testkit.PartitionServer(t)
	const bound = 5 * time.Second
	for i, driver := range itest.Drivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			var freed []time.Duration
			for n := range trials {
				f := cutTxHolder(t, srv, driver, keyspace.Int64(int64(0x7478000+i*1000+n)), 40*time.Second, txlock.WithDeadPeerTimeout(bound))
				freed = append(freed, f)
				if f > bound+2*time.Second {
					t.Errorf("trial %d: the server held the transaction lock %v after the partition, want within %v", n, f.Round(time.Millisecond), bound)
				}
			}
			t.Logf("%s: %d trials, WithDeadPeerTimeout(%v): lock free after %v (each trial)", driver, trials, bound, freed)
			if !testkit.Controls() {
				return
			}
			f := cutTxHolder(t, srv, driver, keyspace.Int64(int64(0x7478000+i*1000+999)), 30*time.Second)
			t.Logf("%s: control without WithDeadPeerTimeout: lock free after %v (30 s: still held)", driver, f.Round(time.Millisecond))
			if f < 30*time.Second {
				t.Errorf("control: without the settings the server freed the lock %v after the partition; the test cannot tell", f)
			}
		})
	}
}

// cutTxHolder takes key in a transaction of its own, cuts the client off,
// and returns how long until the server no longer holds a lock for it (up to
// limit).
func cutTxHolder(t *testing.T, srv *itest.Server, driver string, key keyspace.Key, limit time.Duration, opts ...txlock.Option) time.Duration {
	t.Helper()
	ctx := context.Background()
	db := itest.OpenDSN(t, driver, srv.DSN(""))
	admin := itest.OpenDSN(t, "postgres", srv.DSN(""))
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := txlock.Lock(ctx, tx, key, opts...); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	var pid int
	if err := tx.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	heal := testkit.Cut(t, srv, testkit.ClientPort(t, admin, pid))
	defer heal()
	start := time.Now()
	for {
		var n int
		if err := admin.QueryRowContext(ctx, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", pid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 || time.Since(start) >= limit {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	freed := time.Since(start)
	if freed >= limit {
		admin.ExecContext(ctx, "SELECT pg_terminate_backend($1)", pid)
	}
	return freed
}
