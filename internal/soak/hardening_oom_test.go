package soak_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// manyKeys is more advisory locks than the private server's lock table holds
// (max_locks_per_transaction 10 x max_connections 40, plus the shared
// memory slack PostgreSQL keeps, is a few hundred to a thousand entries).
const manyKeys = 2_500

func keysFrom(base, n int) []keyspace.Key {
	ks := make([]keyspace.Key, n)
	for i := range ks {
		ks[i] = keyspace.Int64(int64(base + i))
	}
	return ks
}

// TestPrivateServer runs what needs a server of the test's own, one server
// for all to save its start: a tiny lock table, and restarts.
func TestPrivateServer(t *testing.T) {
	srv := itest.NewServer(t, itest.Config{Settings: map[string]string{
		"max_locks_per_transaction": "10",
		"max_connections":           "40",
	}})
	t.Run("OutOfLockMemory", func(t *testing.T) { testOutOfLockMemory(t, srv) })
	t.Run("SoakRestart", func(t *testing.T) {
		// A restart takes seconds on a quiet machine and a minute on a busy
		// one: only in the long mode, which asks for time.
		if os.Getenv(EnvSoak) == "" {
			t.Skipf("set %s (e.g. 10m) for the soak with a server restart", EnvSoak)
		}
		// Both drivers in one run: processes alternate between them.
		// Many long sections, so that the restart finds locks held.
		runSoak(t, soakConfig{srv: srv, drivers: itest.Drivers, d: restartRun, restartAt: restartRun / 3, longPercent: 30})
	})
}

// restartRun is the length of the soak with a server restart in it.
const restartRun = 20 * time.Second

// testOutOfLockMemory fills the lock table of a server with a small
// max_locks_per_transaction: the error maps to ErrOutOfLockMemory in both
// packages, nothing stays locked, and the server is usable afterwards.
func testOutOfLockMemory(t *testing.T, srv *itest.Server) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		dsn := srv.NewDatabase(t)
		db := itest.OpenDSN(t, driver, dsn)
		admin := itest.OpenDSN(t, "postgres", dsn)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()

		// Session locks: all or nothing, the connection thrown away.
		l := advisory.New(db)
		start := time.Now()
		lease, err := l.LockAll(ctx, keysFrom(0, manyKeys)...)
		if lease != nil {
			lease.Release(ctx)
			t.Fatalf("LockAll of %d keys succeeded; the lock table is larger than expected", manyKeys)
		}
		t.Logf("advisory.LockAll(%d keys) failed after %v: %s", manyKeys, time.Since(start).Round(time.Millisecond), clip(err))
		if !errors.Is(err, advisory.ErrOutOfLockMemory) {
			t.Fatalf("LockAll error %v, want ErrOutOfLockMemory", err)
		}
		if pgerr.SQLState(err) != pgerr.OutOfMemory {
			t.Fatalf("driver error lost from the chain: SQLSTATE %q", pgerr.SQLState(err))
		}
		testkit.WaitNoAdvisoryLocks(t, admin)
		testkit.WaitConnsIdle(t, db)

		// Transaction locks: the transaction fails, the rollback frees all.
		start = time.Now()
		err = txlock.Do(ctx, db, keyspace.Int64(-1), func(tx *sql.Tx) error {
			return txlock.LockAll(ctx, tx, keysFrom(0, manyKeys)...)
		})
		t.Logf("txlock.LockAll(%d keys) failed after %v: %s", manyKeys, time.Since(start).Round(time.Millisecond), clip(err))
		if !errors.Is(err, txlock.ErrOutOfLockMemory) {
			t.Fatalf("txlock error %v, want ErrOutOfLockMemory", err)
		}
		testkit.WaitNoAdvisoryLocks(t, admin)
		testkit.WaitConnsIdle(t, db)

		// And the server still grants locks.
		if err := l.Do(ctx, keyspace.Int64(7), func(context.Context) error { return nil }); err != nil {
			t.Fatalf("lock after the lock table was full: %v", err)
		}
		testkit.WaitNoAdvisoryLocks(t, admin)
	})
}

// clip shortens an error message for the log: a message that lists every
// key of a large LockAll runs to hundreds of kilobytes.
func clip(err error) string {
	s := fmt.Sprint(err)
	if len(s) > 400 {
		return s[:200] + fmt.Sprintf(" ... [%d bytes] ... ", len(s)-400) + s[len(s)-200:]
	}
	return s
}
