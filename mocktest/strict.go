package mocktest

import (
	"context"
	"database/sql/driver"
	"errors"
	"strings"
	"sync/atomic"
)

// go-sqlmock answers a statement that no expectation matches with an error
// to the code under test, and nothing else: code that swallows the error (a
// release that is only logged, a middleware that answers 503) passes the
// test. So the mock's *sql.DB talks to sqlmock through the connections
// below, which note every such refusal for the end of the test (see
// Mock.ExpectationsWereMet). They forward every method sqlmock's connection
// has, and add none.
//
// They also do what a real connection does once an expectation has lost it
// (ExpectLockConnLost and the like): every later call on it fails with
// driver.ErrBadConn without reaching sqlmock, so the ROLLBACK that
// database/sql still sends on a lost transaction's connection is neither
// expected nor refused.

// connector opens the driver connections of the mock's *sql.DB: sqlmock's,
// wrapped.
type connector struct {
	drv driver.Driver // sqlmock's
	dsn string
	m   *Mock
}

func (c *connector) Connect(context.Context) (driver.Conn, error) {
	dc, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: dc, m: c.m}, nil
}

func (c *connector) Driver() driver.Driver { return mockDriver{} }

// mockDriver is what the mock's db.Driver() returns: neither lib/pq nor pgx,
// as sqlmock's own is not, so advisory and txlock treat it alike.
type mockDriver struct{}

func (mockDriver) Open(string) (driver.Conn, error) {
	return nil, errors.New("mocktest: open the mock through mocktest.New or mocktest.Open")
}

// conn is one driver connection of sqlmock that reports refusals to m.
type conn struct {
	driver.Conn // sqlmock's; it implements every interface asserted below
	m           *Mock
	lost        atomic.Bool // an expectation lost the connection
}

// check fails a call on a lost connection.
func (c *conn) check() error {
	if c.lost.Load() {
		return driver.ErrBadConn
	}
	return nil
}

// after notes what the call (op, q, args) that returned err says: a refusal,
// or a lost connection.
func (c *conn) after(op, q string, args []driver.NamedValue, err error) {
	if errors.As(err, new(connLost)) {
		c.lost.Store(true)
	}
	c.m.refused(op, q, args, err)
}

func (c *conn) Prepare(q string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), q)
}

func (c *conn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	st, err := c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, q)
	c.after("Prepare", q, nil, err)
	if err != nil {
		return nil, err
	}
	return &stmt{Stmt: st, q: q, c: c}, nil
}

func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	t, err := c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
	c.after("Begin", "", nil, err)
	if err != nil {
		return nil, err
	}
	return &tx{Tx: t, c: c}, nil
}

func (c *conn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	res, err := c.Conn.(driver.ExecerContext).ExecContext(ctx, q, args)
	c.after("Exec", q, args, err)
	return res, err
}

func (c *conn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	rows, err := c.Conn.(driver.QueryerContext).QueryContext(ctx, q, args)
	c.after("Query", q, args, err)
	return rows, err
}

func (c *conn) Ping(ctx context.Context) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Conn.(driver.Pinger).Ping(ctx)
}

func (c *conn) CheckNamedValue(nv *driver.NamedValue) error {
	return c.Conn.(driver.NamedValueChecker).CheckNamedValue(nv)
}

// tx reports a refused COMMIT or ROLLBACK.
type tx struct {
	driver.Tx
	c *conn
}

func (t *tx) Commit() error {
	if err := t.c.check(); err != nil {
		return err
	}
	err := t.Tx.Commit()
	t.c.after("Commit", "", nil, err)
	return err
}

func (t *tx) Rollback() error {
	if err := t.c.check(); err != nil {
		return err
	}
	err := t.Tx.Rollback()
	t.c.after("Rollback", "", nil, err)
	return err
}

// stmt reports a refused execution of a prepared statement.
type stmt struct {
	driver.Stmt // sqlmock's; it implements StmtExecContext and StmtQueryContext
	q           string
	c           *conn
}

func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	if err := s.c.check(); err != nil {
		return nil, err
	}
	res, err := s.Stmt.(driver.StmtExecContext).ExecContext(ctx, args)
	s.c.after("Exec", s.q, args, err)
	return res, err
}

func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	if err := s.c.check(); err != nil {
		return nil, err
	}
	rows, err := s.Stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
	s.c.after("Query", s.q, args, err)
	return rows, err
}

// isRefusal reports whether err is go-sqlmock's answer to a call that no
// expectation matches (not an error an expectation was told to return). The
// messages are go-sqlmock's (v1.5.2); TestRefusals pins every kind, so an
// upgrade that rewords them fails there.
func isRefusal(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	for _, s := range []string{
		"was not expected",                   // no expectation of that kind is next, or none is left
		"arguments do not match",             // the next expectation's arguments differ
		"does not equal to expected",         // the next expectation's SQL differs (QueryMatcherEqual)
		"could not match actual sql",         // the same with sqlmock's default matcher
		"but it was not set for expectation", // an expectation without rows or result
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
