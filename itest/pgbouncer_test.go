package itest_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
)

// TestMain is the itest package's: the shared server is stopped and
// goroutine leaks fail the binary. (One TestMain per package: tests of itest
// added in other files share this one.)
func TestMain(m *testing.M) { testkit.Main(m) }

// dbName is the database name of a DSN from itest.
func dbName(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

func TestPgBouncer(t *testing.T) {
	srv := itest.Shared(t)
	for _, mode := range []string{itest.PoolTransaction, itest.PoolSession} {
		t.Run(mode, func(t *testing.T) {
			dsn := itest.StartPgBouncer(t, srv, mode)
			itest.EachDriver(t, func(t *testing.T, driver string) {
				name := dbName(t, itest.DSN(t))
				db := itest.OpenDSN(t, driver, dsn(name))
				ctx := context.Background()
				var got string
				if err := db.QueryRowContext(ctx, "SELECT current_database()").Scan(&got); err != nil {
					t.Fatal(err)
				}
				if got != name {
					t.Fatalf("current_database() through pgbouncer = %q, want %q", got, name)
				}
				// Parameters work with both drivers (pgx in simple protocol).
				var n int64
				if err := db.QueryRowContext(ctx, "SELECT $1::int8 + 1", int64(41)).Scan(&n); err != nil || n != 42 {
					t.Fatalf("parameterised query through pgbouncer: %d, %v", n, err)
				}
				defer testkit.WaitConnsIdle(t, db)
				// A transaction keeps its backend in every pool mode.
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				var p1, p2 int
				if err := tx.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&p1); err != nil {
					t.Fatal(err)
				}
				if err := tx.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&p2); err != nil {
					t.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
				if p1 != p2 {
					t.Fatalf("backend changed inside a transaction: %d then %d", p1, p2)
				}
				if mode != itest.PoolTransaction {
					return
				}
				// Transaction pooling with round robin: one client session
				// meets more than one backend, which is what breaks
				// session locks.
				conn, err := db.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				// While a second client holds a transaction on the backend
				// this client used, the client's next statement runs on
				// another backend.
				other := itest.OpenDSN(t, driver, dsn(name))
				seen := map[int]bool{}
				for i := 0; i < 5 && len(seen) < 2; i++ {
					var pid int
					if err := conn.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
						t.Fatal(err)
					}
					seen[pid] = true
					otx, err := other.BeginTx(ctx, nil)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := otx.ExecContext(ctx, "SELECT 1"); err != nil {
						t.Fatal(err)
					}
					if err := conn.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
						t.Fatal(err)
					}
					seen[pid] = true
					if err := otx.Rollback(); err != nil {
						t.Fatal(err)
					}
				}
				t.Logf("%s: one client session saw backends %v", driver, seen)
				if len(seen) < 2 {
					t.Fatalf("transaction pooling kept one client on one backend: %v", seen)
				}
			})
		})
	}
}
