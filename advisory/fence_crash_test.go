package advisory_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// crashSettings make a server on which asynchronous commits stay in the WAL
// buffers until a crash takes them: the WAL writer wakes every 10s and
// flushes only whole pages in between (or 1GB), no checkpoint or autovacuum
// flushes WAL behind the test's back, and the server is durable otherwise
// (fsync on), as in production.
var crashSettings = map[string]string{
	"fsync":                  "on",
	"synchronous_commit":     "on",
	"full_page_writes":       "on",
	"wal_writer_delay":       "10s",
	"wal_writer_flush_after": "1GB",
	"checkpoint_timeout":     "1h",
	"max_wal_size":           "1GB",
	"autovacuum":             "off",
}

// crashPaths are the two ways a server loses what its WAL buffers held.
var crashPaths = []struct {
	name  string
	crash func(ctx context.Context, t *testing.T, srv *itest.Server, db *sql.DB) error
}{
	{"immediate-restart", func(ctx context.Context, _ *testing.T, srv *itest.Server, _ *sql.DB) error {
		return srv.RestartImmediate(ctx)
	}},
	{"backend-kill", func(ctx context.Context, t *testing.T, srv *itest.Server, db *sql.DB) error {
		var pid int
		if err := db.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			return err
		}
		return srv.KillBackend(ctx, pid)
	}},
}

// lifetime reads the server lifetime the fencing statements compare with
// the epoch row, and its parts.
func lifetime(ctx context.Context, t *testing.T, dsn string) (id, start, reset string) {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRowContext(ctx, "SELECT "+sqltext.FenceLifetime+", pg_postmaster_start_time()::text, coalesce(pg_stat_get_bgwriter_stat_reset_time()::text, 'NULL')").Scan(&id, &start, &reset); err != nil {
		t.Fatal(err)
	}
	return id, start, reset
}

// TestFencingLifetime verifies on a real server what the epoch rests on: the
// server lifetime (sqltext.FenceLifetime) stays the same across reconnects
// and changes on a clean restart (new postmaster start time), on an
// immediate stop, and on a backend killed with SIGKILL, after which the
// postmaster reinitialises and recovers without restarting (same start time,
// new bgwriter statistics reset time).
func TestFencingLifetime(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and crashes a server of its own")
	}
	srv := itest.NewServer(t, itest.Config{Settings: crashSettings})
	ctx := timeout(t, 3*time.Minute)
	dsn := srv.DSN("")
	id0, start0, reset0 := lifetime(ctx, t, dsn)
	if id1, _, _ := lifetime(ctx, t, dsn); id1 != id0 {
		t.Fatalf("a reconnect changed the lifetime: %q, then %q", id0, id1)
	}
	t.Logf("started: %q (start %s, bgwriter reset %s)", id0, start0, reset0)

	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := crashPaths[1].crash(ctx, t, srv, db); err != nil {
		t.Fatal(err)
	}
	db.Close()
	id1, start1, reset1 := lifetime(ctx, t, dsn)
	if id1 == id0 || start1 != start0 || reset1 == reset0 {
		t.Fatalf("backend SIGKILL: lifetime %q -> %q, start %s -> %s, reset %s -> %s; want the same start and a new reset time", id0, id1, start0, start1, reset0, reset1)
	}
	t.Logf("after a backend's SIGKILL and crash recovery: %q (same postmaster start, new bgwriter reset)", id1)

	if err := srv.RestartImmediate(ctx); err != nil {
		t.Fatal(err)
	}
	id2, start2, _ := lifetime(ctx, t, dsn)
	if id2 == id1 || start2 == start1 {
		t.Fatalf("immediate restart: lifetime %q -> %q, start %s -> %s", id1, id2, start1, start2)
	}
	t.Logf("after an immediate stop and start: %q", id2)

	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	id3, start3, reset3 := lifetime(ctx, t, dsn)
	if id3 == id2 || start3 == start2 {
		t.Fatalf("clean restart: lifetime %q -> %q, start %s -> %s", id2, id3, start2, start3)
	}
	if id4, _, _ := lifetime(ctx, t, dsn); id4 != id3 {
		t.Fatalf("a reconnect changed the lifetime: %q, then %q", id3, id4)
	}
	t.Logf("after a clean restart: %q (bgwriter reset %s)", id3, reset3)
}

// TestFencingCrash: draws of the fencing sequence commit asynchronously, so
// a crash loses the latest ones (the sequence recovers to a value below
// the highest draw handed out); the next token must still be above every
// token handed out before. Per driver and per crash path (an immediate
// stop, a backend killed with SIGKILL): take tokens of a key (the first one
// of a lifetime bumps the epoch durably, the rest commit asynchronously and
// stay in the WAL buffers: more than 32 of them, since a sequence writes
// WAL once per 32 draws), crash, then show that the recovered sequence is
// below the highest draw (the crash really lost draws) and that the next
// token, from advisory and from txlock, is above every token before.
func TestFencingCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and crashes a server of its own")
	}
	const n = 100
	srv := itest.NewServer(t, itest.Config{Settings: crashSettings})
	itest.EachDriver(t, func(t *testing.T, driver string) {
		dsn := srv.NewDatabase(t)
		ctx := timeout(t, 3*time.Minute)
		{
			db := itest.OpenDSN(t, driver, dsn)
			if err := advisory.CreateFenceTable(ctx, db, ""); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, "CREATE TABLE flush_marker (i int)"); err != nil {
				t.Fatal(err)
			}
			db.Close()
		}
		for i, path := range crashPaths {
			t.Run(path.name, func(t *testing.T) {
				key := keyspace.Pair(int32(len(driver)), int32(i))
				db := itest.OpenDSN(t, driver, dsn)
				l := advisory.New(db, advisory.WithFencing(""))
				var high int64
				for i := range n {
					if i == 1 {
						// A synchronous commit flushes the WAL before it,
						// so the epoch's bump and the first draws survive:
						// what the crash takes are the later draws.
						if _, err := db.ExecContext(ctx, "INSERT INTO flush_marker VALUES (1)"); err != nil {
							t.Fatal(err)
						}
					}
					lease, err := l.Lock(ctx, key)
					if err != nil {
						t.Fatal(err)
					}
					if lease.Token() <= high {
						t.Fatalf("token %d after %d", lease.Token(), high)
					}
					high = lease.Token()
					if err := lease.Release(ctx); err != nil {
						t.Fatal(err)
					}
				}
				epoch := high >> 40
				if err := path.crash(ctx, t, srv, db); err != nil {
					t.Fatal(err)
				}
				db.Close()

				db = itest.OpenDSN(t, driver, dsn)
				// The recovered sequence and epoch.
				var last, base, rawEpoch int64
				if err := db.QueryRowContext(ctx, "SELECT (SELECT last_value FROM pgadvisory_fence_seq), base, epoch FROM pgadvisory_fence").Scan(&last, &base, &rawEpoch); err != nil {
					t.Fatal(err)
				}
				highDraw := base + high&(1<<40-1)
				if last >= highDraw {
					t.Fatalf("the recovered sequence is at %d, the highest draw handed out was %d: the crash lost no asynchronous commit, so the test shows nothing", last, highDraw)
				}
				if rawEpoch != epoch {
					t.Fatalf("the recovered epoch row holds %d, the tokens were of epoch %d: the epoch bump was not durable", rawEpoch, epoch)
				}
				l = advisory.New(db, advisory.WithFencing(""))
				lease, err := l.Lock(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				next := lease.Token()
				if err := lease.Release(ctx); err != nil {
					t.Fatal(err)
				}
				if next <= high {
					t.Fatalf("after the crash: token %d, but %d was handed out before it", next, high)
				}
				if next != (epoch+1)<<40+1 {
					t.Fatalf("after the crash: token %d, want the first of epoch %d (%d)", next, epoch+1, (epoch+1)<<40+1)
				}
				tok, err := txlock.NextToken(ctx, db, key, "")
				if err != nil || tok != next+1 {
					t.Fatalf("txlock.NextToken after the crash = %d, %v; want %d", tok, err, next+1)
				}
				t.Logf("%d tokens up to %d (epoch %d, counter %d, draw %d); after the crash the sequence was at %d (%d draws lost), the next token is %d (epoch %d, counter %d)",
					n, high, epoch, high&(1<<40-1), highDraw, last, highDraw-last, next, next>>40, next&(1<<40-1))
			})
		}
	})
}
