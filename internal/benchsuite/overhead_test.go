package benchsuite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/lib/pq"

	"github.com/pgadvisory/pgadvisory/advisory"
)

// BenchmarkOverhead measures what the client spends per lock+unlock, without
// a server: the connections answer every statement at once (as if granted),
// and db.Driver() is the real lib/pq or pgx driver, so the library takes the
// same path (SQL style, pid cache) as with that driver. The drivers' own work
// (encoding, the socket, pgx's context watch) is not in it; database/sql's
// is. It shows the library's bookkeeping against the raw form's in
// nanoseconds and allocations, free of the network's noise, with 1 and 8
// goroutines; raw-pooled is the raw form on a connection taken from the
// pool per lock, so that library minus raw-pooled is the library's own
// bookkeeping. Informational: the goals are measured on the real server.
func BenchmarkOverhead(b *testing.B) {
	for _, name := range []string{"postgres", "pgx"} {
		b.Run("driver="+name, func(b *testing.B) {
			db := openStub(b, name)
			l := advisory.New(db)
			raw := bestStyle(db)
			forms := []form{
				{name: "library", op: libraryOp(l)},
				{name: raw.name, pin: true, op: raw.lockUnlock},
				pooledForm(db, raw),
			}
			for _, conns := range []int{1, 8} {
				runForms(b, db, conns, forms)
			}
		})
	}
}

// openStub opens a *sql.DB whose connections answer at once and whose
// Driver() is the real driver called name.
func openStub(tb testing.TB, name string) *sql.DB {
	tb.Helper()
	var drv driver.Driver
	switch name {
	case "postgres":
		drv = &pq.Driver{}
	case "pgx":
		drv = stdlib.GetDefaultDriver()
	default:
		tb.Fatalf("benchsuite: no stub for driver %q", name)
	}
	db := sql.OpenDB(&stubConnector{drv: drv})
	tb.Cleanup(func() { db.Close() })
	return db
}

type stubConnector struct {
	drv  driver.Driver
	pids atomic.Int64
}

func (c *stubConnector) Connect(context.Context) (driver.Conn, error) {
	return &stubConn{pid: c.pids.Add(1)}, nil
}

func (c *stubConnector) Driver() driver.Driver { return c.drv }

// stubConn grants every lock and every unlock. A statement that asks for the
// backend pid gets (true, pid); any other query gets (true); an Exec
// affects one row (the Exec forms of the library read "granted" and "was
// held" from that).
type stubConn struct{ pid int64 }

func (c *stubConn) Prepare(string) (driver.Stmt, error) { return nil, driver.ErrSkip }
func (c *stubConn) Close() error                        { return nil }
func (c *stubConn) Begin() (driver.Tx, error)           { return nil, driver.ErrSkip }

func (c *stubConn) ExecContext(context.Context, string, []driver.NamedValue) (driver.Result, error) {
	return driver.RowsAffected(1), nil
}

func (c *stubConn) QueryContext(_ context.Context, q string, _ []driver.NamedValue) (driver.Rows, error) {
	if strings.Contains(q, "pg_backend_pid()") {
		return &stubRows{cols: []string{"ok", "pid"}, vals: []driver.Value{true, c.pid}}, nil
	}
	return &stubRows{cols: []string{"ok"}, vals: []driver.Value{true}}, nil
}

// stubRows is one row.
type stubRows struct {
	cols []string
	vals []driver.Value
	done bool
}

func (r *stubRows) Columns() []string { return r.cols }
func (r *stubRows) Close() error      { return nil }

func (r *stubRows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	copy(dest, r.vals)
	return nil
}
