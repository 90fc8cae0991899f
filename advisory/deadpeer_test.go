package advisory_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// partitionHolder takes key on a Locker of its own, cuts it off, and
// returns how long until the server no longer holds key for it (up to
// limit; limit itself if still held then) and how long until the lease
// reported its loss.
func partitionHolder(t *testing.T, srv *itest.Server, driver string, key keyspace.Key, limit time.Duration, opts ...advisory.Option) (freed, lost time.Duration) {
	t.Helper()
	dsn := srv.DSN("")
	db := itest.OpenDSN(t, driver, dsn)
	admin := itest.OpenDSN(t, "postgres", dsn)
	ctx := context.Background()
	l := advisory.New(db, opts...)
	lease, err := l.TryLock(ctx, key)
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	pid := lease.PID()
	heal := testkit.Cut(t, srv, testkit.ClientPort(t, admin, pid))
	start := time.Now()
	lostAt := make(chan time.Duration, 1)
	go func() {
		<-lease.Lost()
		lostAt <- time.Since(start)
	}()
	for {
		held := slices.Contains(lockRows(t, admin, key, true), pid)
		freed = time.Since(start)
		if !held || freed >= limit {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case lost = <-lostAt:
	case <-time.After(10 * time.Second):
		t.Errorf("the lease did not report its loss within 10 s of the partition")
	}
	if lerr := lease.Err(); lerr == nil {
		t.Errorf("lease.Err() = nil after the partition")
	}
	heal()
	if freed >= limit {
		// The control: end the session so nothing outlives the test.
		admin.Exec("SELECT pg_terminate_backend($1)", pid)
	}
	_ = lease.Release(ctx)
	// The keepalive's ping stuck on the cut connection returns once the
	// client's next retransmission meets the server's reset; only then is
	// the connection discarded.
	testkit.WaitConnsIdleWithin(t, db, time.Minute)
	return freed, lost
}

// TestDeadPeerPartition: a holder cut off from the server loses its lock
// on the server within the default dead-peer timeout (10 s with the default
// keepalive), on both drivers; without the settings (WithDeadPeerTimeout(0))
// the server still holds it after 30 s.
func TestDeadPeerPartition(t *testing.T) {
	trials := testkit.PartitionTrials(t)
	t.Cleanup(func() { testkit.VerifyNone(t) })
	srv := testkit.PartitionServer(t)
	bound := 10 * time.Second // the default: 10 keepalive intervals, at least 5 s
	for i, driver := range itest.Drivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			var freed, lost []time.Duration
			for n := range trials {
				key := keyspace.Int64(int64(0x6465616400 + i*1000 + n))
				f, l := partitionHolder(t, srv, driver, key, 40*time.Second)
				freed = append(freed, f)
				lost = append(lost, l)
				if f > bound+2*time.Second {
					t.Errorf("trial %d: the server held the lock %v after the partition, want within %v", n, f.Round(time.Millisecond), bound)
				}
				if l > 3*time.Second {
					t.Errorf("trial %d: the lease reported its loss %v after the partition, want within the keepalive + 2 s", n, l.Round(time.Millisecond))
				}
			}
			t.Logf("%s: %d trials, bound %v: lock free on the server after %s; loss reported after %s",
				driver, trials, bound, spread(freed), spread(lost))
			if !testkit.Controls() {
				return
			}
			key := keyspace.Int64(int64(0x6465616400 + i*1000 + 999))
			f, _ := partitionHolder(t, srv, driver, key, 30*time.Second, advisory.WithDeadPeerTimeout(0))
			t.Logf("%s: control without the settings: %s after %v", driver, map[bool]string{true: "still held", false: "freed"}[f >= 30*time.Second], f.Round(time.Millisecond))
			if f < 30*time.Second {
				t.Errorf("control: without the settings the server freed the lock %v after the partition; the test cannot tell", f)
			}
		})
	}
}

// TestDeadPeerWaiter: a client cut off while its Lock waits on the server
// is never granted the lock: its backend notices the dead client while it
// waits (client_connection_check_interval) and ends, before the holder
// releases.
func TestDeadPeerWaiter(t *testing.T) {
	testkit.PartitionTrials(t)
	t.Cleanup(func() { testkit.VerifyNone(t) })
	srv := testkit.PartitionServer(t)
	for i, driver := range itest.Drivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			dsn := srv.DSN("")
			admin := itest.OpenDSN(t, "postgres", dsn)
			key := keyspace.Int64(int64(0x7761697400 + i))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			holder, err := admin.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Close()
			if _, err := holder.ExecContext(ctx, "SELECT pg_advisory_lock($1)", int64Of(key)); err != nil {
				t.Fatal(err)
			}
			db := itest.OpenDSN(t, driver, dsn)
			l := advisory.New(db)
			wctx, wcancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				lease, err := l.Lock(wctx, key)
				if err == nil {
					err = fmt.Errorf("granted to backend %d", lease.PID())
					lease.Release(context.Background())
				}
				done <- err
			}()
			waiter := waitingBackend(t, admin, key)
			heal := testkit.Cut(t, srv, testkit.ClientPort(t, admin, waiter))
			start := time.Now()
			for {
				var n int
				if err := admin.QueryRowContext(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", waiter).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
				if time.Since(start) > 20*time.Second {
					t.Fatalf("the waiting backend %d of the cut-off client still runs %v after the partition", waiter, time.Since(start).Round(time.Millisecond))
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("%s: the cut-off waiter's backend ended %v after the partition, the lock still held by the other session",
				driver, time.Since(start).Round(time.Millisecond))
			if _, err := holder.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", int64Of(key)); err != nil {
				t.Fatal(err)
			}
			var free bool
			if err := holder.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", int64Of(key)).Scan(&free); err != nil {
				t.Fatal(err)
			}
			if !free {
				t.Errorf("after the holder released, the key is held: the cut-off waiter was granted it")
			}
			holder.ExecContext(ctx, "SELECT pg_advisory_unlock_all()")
			// Healed, the client's socket learns that its session is gone
			// (at the latest from its own TCP keepalive); its Lock, cancelled,
			// returns.
			heal()
			wcancel()
			select {
			case err := <-done:
				if err == nil || strings.Contains(err.Error(), "granted") {
					t.Errorf("the cut-off waiter's Lock: %v, want an error", err)
				}
			case <-time.After(time.Minute):
				t.Errorf("the cut-off waiter's Lock has not returned a minute after its context ended")
			}
			testkit.WaitConnsIdleWithin(t, db, time.Minute)
		})
	}
}

// spread formats durations as min/median/max.
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
	return fmt.Sprintf("min %v / median %v / max %v", r(s[0]), r(s[len(s)/2]), r(s[len(s)-1]))
}

// int64Of returns the single bigint of key (0 for a pair).
func int64Of(key keyspace.Key) int64 {
	n, _ := key.Int64()
	return n
}

// TestDeadPeerRefused: a server that refuses the dead-peer settings (played
// here by a statement that sets an invalid value, 22023), or lacks some of
// them (played by a name it does not have), gets one warning per Locker,
// naming what went wrong, and every acquire still succeeds.
func TestDeadPeerRefused(t *testing.T) {
	for _, c := range []deadPeerCase{
		{"refused", "SELECT pg_backend_pid(), set_config('tcp_keepalives_idle', 'soon', false)", "refused the settings"},
		{"missing", "SELECT pg_backend_pid(), 'tcp_no_such_setting'", "tcp_no_such_setting"},
	} {
		t.Run(c.name, func(t *testing.T) { itest.EachDriver(t, c.run) })
	}
}

// deadPeerCase is a server's answer to the dead-peer statement (sql) and
// what the warning must say.
type deadPeerCase struct{ name, sql, want string }

func (c deadPeerCase) run(t *testing.T, driver string) {
	e := setup(t, driver)
	var mu sync.Mutex
	var buf strings.Builder
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx := timeout(t, 30*time.Second)
	for _, dedicated := range []bool{false, true} {
		opts := []advisory.Option{advisory.WithLogger(logger)}
		if dedicated {
			opts = append(opts, advisory.WithDedicatedSessions())
		}
		l := advisory.New(e.db, opts...)
		advisory.SetDeadPeerSQL(l, c.sql)
		for i := range 3 {
			lease, err := l.Lock(ctx, testKey(t))
			if err != nil {
				t.Fatalf("dedicated %v, acquire %d: %v", dedicated, i, err)
			}
			if err := lease.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	mu.Lock()
	logged := buf.String()
	mu.Unlock()
	if n := strings.Count(logged, "dead-peer timeout"); n != 2 {
		t.Errorf("%d warnings for 2 Lockers, want one each:\n%s", n, logged)
	}
	if !strings.Contains(logged, c.want) {
		t.Errorf("the warning does not say %q:\n%s", c.want, logged)
	}
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (lw lockedWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.w.Write(p)
}
