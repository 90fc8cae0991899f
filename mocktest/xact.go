package mocktest

import (
	"time"

	"github.com/DATA-DOG/go-sqlmock"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Expectations for the transaction locks of package txlock. They go between
// the transaction's ExpectBegin and its ExpectCommit or ExpectRollback. They
// expect what txlock sends on a *sql.Tx (or any transaction with an
// ExecContext method): the single-key locks go with Exec. The
// mock's own WithLockTimeout does not apply to them (txlock has no default
// timeout); pass WithLockTimeout to the expectation when the call under test
// passes txlock.WithLockTimeout.

// ExpectXactLock expects txlock's Lock of key (or Do's), and grants it.
func (m *Mock) ExpectXactLock(key keyspace.Key, opts ...Option) *sqlmock.ExpectedExec {
	return m.expectXact(sqltext.Mode{}, key, xactTimeout(opts), true)
}

// ExpectXactLockShared expects txlock's LockShared of key, and grants it.
func (m *Mock) ExpectXactLockShared(key keyspace.Key, opts ...Option) *sqlmock.ExpectedExec {
	return m.expectXact(sqltext.Mode{Shared: true}, key, xactTimeout(opts), true)
}

// ExpectXactTryLock expects txlock's TryLock of key and answers acquired.
func (m *Mock) ExpectXactTryLock(key keyspace.Key, acquired bool) *sqlmock.ExpectedExec {
	return m.expectXact(sqltext.Mode{Try: true}, key, 0, acquired)
}

// ExpectXactTryLockShared expects txlock's TryLockShared of key and answers
// acquired.
func (m *Mock) ExpectXactTryLockShared(key keyspace.Key, acquired bool) *sqlmock.ExpectedExec {
	return m.expectXact(sqltext.Mode{Shared: true, Try: true}, key, 0, acquired)
}

// ExpectXactLockAll expects txlock's LockAll of keys (in any order: LockAll
// sorts and de-duplicates them), and grants them all.
func (m *Mock) ExpectXactLockAll(keys ...keyspace.Key) *sqlmock.ExpectedQuery {
	return m.ExpectXactLockAllTimeout(0, keys...)
}

// ExpectXactLockAllTimeout expects txlock's LockAllTimeout(ctx, tx, timeout,
// keys...), and grants every key.
func (m *Mock) ExpectXactLockAllTimeout(timeout time.Duration, keys ...keyspace.Key) *sqlmock.ExpectedQuery {
	ks := sorted(keys)
	q, args := sqltext.XactLockAll(style, sqltext.Mode{}, ks, timeout)
	return m.expect(q, args).WillReturnRows(sqlmock.NewRows([]string{"acquired"}).AddRow(int64(len(ks))))
}

// ExpectXactLockTimeout expects txlock's Lock of key and fails it as the
// server does when lock_timeout runs out (SQLSTATE 55P03): Lock returns an
// error matching txlock.ErrLockTimeout.
func (m *Mock) ExpectXactLockTimeout(key keyspace.Key, opts ...Option) *sqlmock.ExpectedExec {
	q, args := sqltext.XactLockExec(style, sqltext.Mode{}, key, xactTimeout(opts))
	return m.expectExec(q, args).WillReturnError(lockTimeoutError())
}

// ExpectXactLockConnLost expects txlock's Lock of key and loses the
// connection under it: Lock returns an error, and so does the transaction's
// end.
func (m *Mock) ExpectXactLockConnLost(key keyspace.Key, opts ...Option) *sqlmock.ExpectedExec {
	q, args := sqltext.XactLockExec(style, sqltext.Mode{}, key, xactTimeout(opts))
	return m.expectExec(q, args).WillReturnError(connLostError())
}

func (m *Mock) expectXact(mode sqltext.Mode, key keyspace.Key, timeout time.Duration, acquired bool) *sqlmock.ExpectedExec {
	q, args := sqltext.XactLockExec(style, mode, key, timeout)
	return m.expectExec(q, args).WillReturnResult(sqlmock.NewResult(0, rowCount(acquired)))
}

// xactTimeout is the timeout of a transaction-lock expectation: only what is
// given to it.
func xactTimeout(opts []Option) time.Duration {
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return c.timeout
}
