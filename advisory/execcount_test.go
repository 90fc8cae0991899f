package advisory

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"sync/atomic"
	"testing"
)

// fakeConnector makes connections that count the statements that reach
// them: through ExecerContext (direct) or through a prepared statement
// (what database/sql falls back to). With skip, ExecContext answers
// driver.ErrSkip; without execer, the connection has no ExecContext at all.
type fakeConnector struct {
	execer, skip     bool
	direct, prepared atomic.Int32
}

func (c *fakeConnector) Connect(context.Context) (driver.Conn, error) {
	base := &fakeConn{c: c}
	if c.execer {
		return &fakeExecerConn{base}, nil
	}
	return base, nil
}

func (c *fakeConnector) Driver() driver.Driver { return nil }

type fakeConn struct{ c *fakeConnector }

func (f *fakeConn) Prepare(string) (driver.Stmt, error) { return &fakeStmt{f.c}, nil }
func (f *fakeConn) Close() error                        { return nil }
func (f *fakeConn) Begin() (driver.Tx, error)           { return nil, driver.ErrSkip }

type fakeExecerConn struct{ *fakeConn }

func (f *fakeExecerConn) ExecContext(_ context.Context, _ string, args []driver.NamedValue) (driver.Result, error) {
	if f.c.skip {
		return nil, driver.ErrSkip
	}
	f.c.direct.Add(1)
	return driver.RowsAffected(int64(len(args))), nil
}

type fakeStmt struct{ c *fakeConnector }

func (s *fakeStmt) Close() error  { return nil }
func (s *fakeStmt) NumInput() int { return -1 }
func (s *fakeStmt) Exec(args []driver.Value) (driver.Result, error) {
	s.c.prepared.Add(1)
	return driver.RowsAffected(int64(len(args))), nil
}
func (s *fakeStmt) Query([]driver.Value) (driver.Rows, error) { return nil, driver.ErrSkip }

// execCountIf sends a statement to the driver's ExecerContext directly, falls
// back to database/sql's Exec for a driver without one or one that answers
// ErrSkip, sends nothing when its condition says no, and passes the
// arguments in order either way.
func TestExecCount(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name                 string
		execer, skip         bool
		wantDirect, wantPrep int32
	}{
		{"ExecerContext", true, false, 1, 0},
		{"ErrSkip", true, true, 0, 1},
		{"no ExecerContext", false, false, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := &fakeConnector{execer: tc.execer, skip: tc.skip}
			db := sql.OpenDB(fc)
			defer db.Close()
			conn, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			n, err := execCount(ctx, conn, "SELECT $1, $2", []any{int64(7), "1500"})
			if err != nil || n != 2 {
				t.Fatalf("execCount = %d, %v; want 2 rows (one per argument)", n, err)
			}
			if d, p := fc.direct.Load(), fc.prepared.Load(); d != tc.wantDirect || p != tc.wantPrep {
				t.Fatalf("%d direct and %d prepared statements, want %d and %d", d, p, tc.wantDirect, tc.wantPrep)
			}
		})
	}
}
