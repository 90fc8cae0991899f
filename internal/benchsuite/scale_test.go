package benchsuite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// manyLocks is how many session locks one process holds at once.
const manyLocks = 10_000

// BenchmarkManyLocks: one process takes 10,000 session locks, holds them all
// at once, and releases them; ns/op is the whole acquire+release. It runs on
// a private server with max_locks_per_transaction raised (the shared lock
// table holds max_locks_per_transaction x max_connections entries).
//
//   - form=library: advisory.Locker.LockAll of all keys: one lease, one
//     connection, one round trip to acquire; Release unlocks key by key.
//   - form=library-4conns: four LockAll leases of 2,500 keys each, taken and
//     released in parallel on 4 connections.
//   - form=raw-array: the best hand-written form: one statement that locks
//     every key of an array and one that unlocks them, on a pinned
//     connection.
//
// Metric conns is the number of connections that hold the locks.
func BenchmarkManyLocks(b *testing.B) {
	srv := itest.NewServer(b, itest.Config{Settings: map[string]string{"max_locks_per_transaction": "512"}})
	for _, d := range itest.Drivers {
		b.Run("driver="+d, func(b *testing.B) {
			dsn := srv.NewDatabase(b)
			db := itest.OpenDSN(b, d, dsn)
			admin := itest.OpenDSN(b, "postgres", dsn)
			setPool(b, db, 4)
			r := newRNG()
			ns := make([]int64, manyLocks)
			keys := make([]keyspace.Key, manyLocks)
			for i := range ns {
				ns[i] = r.next()
			}
			slices.Sort(ns)
			ns = slices.Compact(ns)
			for i, n := range ns {
				keys[i] = keyspace.Int64(n)
			}
			keys = keys[:len(ns)]
			l := advisory.New(db)
			ctx := context.Background()
			// A library form that has not finished within opTimeout fails
			// (the goal is not met) instead of stalling the whole run.
			const opTimeout = 30 * time.Second

			b.Run("form=library", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					octx, cancel := context.WithTimeout(ctx, opTimeout)
					lease, err := l.LockAll(octx, keys...)
					if err == nil {
						err = lease.Release(octx)
					}
					cancel()
					if err != nil {
						b.Fatal(short(err))
					}
				}
				b.ReportMetric(1, "conns")
			})
			b.Run("form=library-4conns", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					octx, cancel := context.WithTimeout(ctx, opTimeout)
					var g errgroup.Group
					for part := range slices.Chunk(keys, (len(keys)+3)/4) {
						g.Go(func() error {
							lease, err := l.LockAll(octx, part...)
							if err != nil {
								return err
							}
							return lease.Release(octx)
						})
					}
					err := g.Wait()
					cancel()
					if err != nil {
						b.Fatal(short(err))
					}
				}
				b.ReportMetric(4, "conns")
			})
			b.Run("form=proposal-unlockmany", func(b *testing.B) {
				// What LockAll+Release cost once Release uses
				// sqltext.UnlockMany: the library's own statements on a
				// pinned connection, one round trip each way. The keys go
				// inline on both drivers: as parameters, sqltext.LockAll's
				// key array is re-parsed at every step of its recursion
				// (quadratic: minutes for 10,000 keys on pgx) until its
				// CTE is fenced (MATERIALIZED); inline, the server folds it
				// once.
				c, err := db.Conn(ctx)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				style := sqltext.Inline
				b.ReportAllocs()
				for b.Loop() {
					var n int64
					var pid int
					q, args := sqltext.LockAll(style, sqltext.Mode{}, keys, 0)
					if err := c.QueryRowContext(ctx, q, args...).Scan(&n, &pid); err != nil || n != int64(len(keys)) {
						b.Fatalf("lock all: %d of %d, %v", n, len(keys), err)
					}
					q, args = sqltext.UnlockMany(style, false, keys)
					if err := c.QueryRowContext(ctx, q, args...).Scan(&n); err != nil || n != int64(len(keys)) {
						b.Fatalf("unlock many: %d of %d, %v", n, len(keys), err)
					}
				}
				b.ReportMetric(1, "conns")
			})
			b.Run("form=raw-array", func(b *testing.B) {
				c, err := db.Conn(ctx)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				arr := int8Array(ns)
				b.ReportAllocs()
				for b.Loop() {
					if err := rawArray(ctx, c, "pg_advisory_lock", arr, len(ns)); err != nil {
						b.Fatal(err)
					}
					if err := rawArray(ctx, c, "pg_advisory_unlock", arr, len(ns)); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(1, "conns")
			})
			testkit.WaitConnsIdle(b, db)
			testkit.WaitNoAdvisoryLocks(b, admin)
		})
	}
}

// int8Array renders ns as a PostgreSQL array literal, passed as text so that
// both drivers take it without driver-specific array types.
func int8Array(ns []int64) string {
	var sb strings.Builder
	sb.WriteByte('{')
	for i, n := range ns {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.FormatInt(n, 10))
	}
	sb.WriteByte('}')
	return sb.String()
}

// rawArray calls fn (pg_advisory_lock or pg_advisory_unlock) on every key of
// arr in order, in one statement, and checks that it ran want times (and, for
// unlock, that every call found the lock held).
func rawArray(ctx context.Context, c *sql.Conn, fn, arr string, want int) error {
	cond := "true"
	if strings.Contains(fn, "unlock") {
		cond = "r"
	}
	q := "SELECT count(*) FILTER (WHERE " + cond + ") FROM (SELECT " + fn + "(k)" +
		map[bool]string{true: " AS r", false: " IS NULL AS r"}[cond == "r"] +
		" FROM unnest($1::text::int8[]) WITH ORDINALITY AS a(k, i) ORDER BY i) s"
	var n int
	if err := c.QueryRowContext(ctx, q, arr).Scan(&n); err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("benchsuite: %s ran on %d of %d keys", fn, n, want)
	}
	return nil
}

// short cuts an error message that lists thousands of keys down to a line.
func short(err error) string {
	s := err.Error()
	if len(s) > 300 {
		s = s[:150] + " ... " + s[len(s)-150:]
	}
	return s
}
