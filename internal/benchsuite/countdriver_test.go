package benchsuite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/lib/pq"
)

// counter counts the statements (round trips started by the client) that
// go through a counting *sql.DB: queries, execs, BEGIN, COMMIT, ROLLBACK,
// prepares and pings.
type counter struct{ n atomic.Int64 }

func (c *counter) add() { c.n.Add(1) }

// Load returns the count so far.
func (c *counter) Load() int64 { return c.n.Load() }

// openCounting opens dsn with driverName through a connector that counts
// statements. db.Driver() still returns the real driver, so the library
// picks the same SQL style as without the wrapper.
func openCounting(tb testing.TB, driverName, dsn string) (*sql.DB, *counter) {
	tb.Helper()
	var inner driver.Connector
	var err error
	switch driverName {
	case "postgres":
		inner, err = pq.NewConnector(dsn)
	case "pgx":
		inner, err = (&stdlib.Driver{}).OpenConnector(dsn)
	default:
		tb.Fatalf("benchsuite: no counting connector for driver %q", driverName)
	}
	if err != nil {
		tb.Fatal(err)
	}
	probe, err := sql.Open(driverName, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	real := probe.Driver()
	probe.Close()
	c := &counter{}
	db := sql.OpenDB(&countConnector{inner: inner, drv: real, n: c})
	tb.Cleanup(func() { db.Close() })
	return db, c
}

type countConnector struct {
	inner driver.Connector
	drv   driver.Driver
	n     *counter
}

func (c *countConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &countConn{inner: conn, n: c.n}, nil
}

func (c *countConnector) Driver() driver.Driver { return c.drv }

// countConn forwards to the driver's connection and counts what reaches the
// server. Optional interfaces the driver lacks answer driver.ErrSkip, which
// makes database/sql fall back as it would without the wrapper.
type countConn struct {
	inner driver.Conn
	n     *counter
}

func (c *countConn) Close() error { return c.inner.Close() }

func (c *countConn) Begin() (driver.Tx, error) {
	c.n.add()
	tx, err := c.inner.Begin() // the (deprecated) driver.Conn method, forwarded
	if err != nil {
		return nil, err
	}
	return &countTx{tx, c.n}, nil
}

// Conn returns pgx's connection under the wrapper, as *stdlib.Conn's Conn
// does, so that the library reaches the socket as it would without the
// wrapper (nil for other drivers).
func (c *countConn) Conn() *pgx.Conn {
	if s, ok := c.inner.(*stdlib.Conn); ok {
		return s.Conn()
	}
	return nil
}

func (c *countConn) Prepare(q string) (driver.Stmt, error) {
	c.n.add()
	return c.inner.Prepare(q)
}

func (c *countConn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	c.n.add()
	if p, ok := c.inner.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, q)
	}
	return c.inner.Prepare(q)
}

func (c *countConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	c.n.add()
	b, ok := c.inner.(driver.ConnBeginTx)
	if !ok {
		return nil, driver.ErrSkip
	}
	tx, err := b.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &countTx{tx, c.n}, nil
}

func (c *countConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	qc, ok := c.inner.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	c.n.add()
	return qc.QueryContext(ctx, q, args)
}

func (c *countConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	ec, ok := c.inner.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	c.n.add()
	return ec.ExecContext(ctx, q, args)
}

func (c *countConn) Ping(ctx context.Context) error {
	p, ok := c.inner.(driver.Pinger)
	if !ok {
		return nil
	}
	c.n.add()
	return p.Ping(ctx)
}

func (c *countConn) ResetSession(ctx context.Context) error {
	if r, ok := c.inner.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *countConn) IsValid() bool {
	if v, ok := c.inner.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c *countConn) CheckNamedValue(nv *driver.NamedValue) error {
	if ch, ok := c.inner.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

type countTx struct {
	driver.Tx
	n *counter
}

func (t *countTx) Commit() error {
	t.n.add()
	return t.Tx.Commit()
}

func (t *countTx) Rollback() error {
	t.n.add()
	return t.Tx.Rollback()
}
