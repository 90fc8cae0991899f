package mocktest

import (
	"database/sql/driver"
	"slices"
	"strconv"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Expectations for the session locks of package advisory. Each returns the
// sqlmock expectation, for WillDelayFor and the like.

// ExpectLock expects advisory's Lock of key, and grants it at once (Lock
// tries first, and waits only for a key held elsewhere: see
// ExpectLockTimeout for a wait). opts are accepted for symmetry with the
// failure modes; a granted try carries no lock_timeout.
func (m *Mock) ExpectLock(key keyspace.Key, opts ...Option) *sqlmock.ExpectedQuery {
	return m.expectAcquire(sqltext.Mode{Try: true}, key, 0, true)
}

// ExpectLockShared expects advisory's LockShared of key, and grants it.
func (m *Mock) ExpectLockShared(key keyspace.Key, opts ...Option) *sqlmock.ExpectedQuery {
	return m.expectAcquire(sqltext.Mode{Shared: true, Try: true}, key, 0, true)
}

// ExpectTryLock expects advisory's TryLock of key and answers acquired (false:
// another session holds it, and TryLock returns advisory.ErrNotAcquired).
func (m *Mock) ExpectTryLock(key keyspace.Key, acquired bool) *sqlmock.ExpectedQuery {
	return m.expectAcquire(sqltext.Mode{Try: true}, key, 0, acquired)
}

// ExpectTryLockShared is ExpectTryLock for advisory's TryLockShared.
func (m *Mock) ExpectTryLockShared(key keyspace.Key, acquired bool) *sqlmock.ExpectedQuery {
	return m.expectAcquire(sqltext.Mode{Shared: true, Try: true}, key, 0, acquired)
}

// ExpectLockAll expects advisory's LockAll of keys (in any order: LockAll
// sorts and de-duplicates them), and grants them all at once (LockAll tries
// first; with fencing, whose tokens come with the whole set, it sends its
// waiting statement at once).
func (m *Mock) ExpectLockAll(keys ...keyspace.Key) *sqlmock.ExpectedQuery {
	ks := sorted(keys)
	if m.fencing && len(ks) > 1 {
		return m.expectAcquireAll(sqltext.Mode{}, ks, m.timeout, true)
	}
	return m.expectAcquireAll(sqltext.Mode{Try: true}, ks, 0, true)
}

// expectBusyTry expects the try that Lock of key sends first, and refuses
// it as for a key held elsewhere; Lock then waits.
func (m *Mock) expectBusyTry(key keyspace.Key) {
	m.expectAcquire(sqltext.Mode{Try: true}, key, 0, false)
}

// ExpectLockWaited expects advisory's Lock of key, a key held elsewhere for
// a while: its try is refused, and its wait that follows is granted (with
// the Contended hook, once). It returns the expectation of the wait.
func (m *Mock) ExpectLockWaited(key keyspace.Key, opts ...Option) *sqlmock.ExpectedQuery {
	m.expectBusyTry(key)
	return m.expectAcquire(sqltext.Mode{}, key, m.timeoutFor(opts), true)
}

// ExpectLockTimeout expects advisory's Lock of key, a key held elsewhere:
// its try is refused, and its wait fails as the server's does when
// lock_timeout runs out (SQLSTATE 55P03): Lock returns an error matching
// advisory.ErrLockTimeout. It returns the expectation of the wait.
func (m *Mock) ExpectLockTimeout(key keyspace.Key, opts ...Option) *sqlmock.ExpectedQuery {
	m.expectBusyTry(key)
	q, args := m.acquireStmt(sqltext.Mode{}, []keyspace.Key{key}, m.timeoutFor(opts))
	return m.expect(q, args).WillReturnError(lockTimeoutError())
}

// ExpectLockConnLost expects advisory's Lock of key, a key held elsewhere,
// and loses the connection under its wait, as a server that goes away
// mid-wait does: Lock returns an error and the connection is not reused. It
// returns the expectation of the wait.
func (m *Mock) ExpectLockConnLost(key keyspace.Key, opts ...Option) *sqlmock.ExpectedQuery {
	m.expectBusyTry(key)
	q, args := m.acquireStmt(sqltext.Mode{}, []keyspace.Key{key}, m.timeoutFor(opts))
	return m.expect(q, args).WillReturnError(connLostError())
}

// ExpectLockNoFenceTable expects advisory's Lock of key on a Locker with
// fencing (New with WithFencing) and fails it as the server does when the
// fencing table does not exist (SQLSTATE 42P01 for its sequence), then
// expects the question advisory asks to name the fix and answers that there
// is no such table: Lock returns an error matching advisory.ErrNoFenceTable.
// It returns the expectation of the acquire.
func (m *Mock) ExpectLockNoFenceTable(key keyspace.Key, opts ...Option) *sqlmock.ExpectedQuery {
	q, args := m.acquireStmt(sqltext.Mode{Try: true}, []keyspace.Key{key}, 0)
	e := m.expect(q, args).WillReturnError(&pgconn.PgError{Severity: "ERROR", Code: pgerr.UndefinedTable,
		Message: "relation " + sqltext.FenceSeq(m.fenceTable) + " does not exist"})
	m.expect(sqltext.FenceLayout(m.fenceTable), nil).WillReturnRows(sqlmock.NewRows([]string{"columns", "seq"}).AddRow(nil, false))
	return e
}

// ExpectUnlock expects the release of an exclusive lease on key and answers
// released. False is what a server answers when the session no longer held
// the lock: Release then returns an error matching advisory.ErrLockLost and
// discards the connection.
func (m *Mock) ExpectUnlock(key keyspace.Key, released bool) *sqlmock.ExpectedExec {
	q, args := sqltext.Unlock(style, false, key)
	return m.expectExec(q, args).WillReturnResult(sqlmock.NewResult(0, rowCount(released)))
}

// ExpectUnlockShared is ExpectUnlock for a shared lease.
func (m *Mock) ExpectUnlockShared(key keyspace.Key, released bool) *sqlmock.ExpectedExec {
	q, args := sqltext.Unlock(style, true, key)
	return m.expectExec(q, args).WillReturnResult(sqlmock.NewResult(0, rowCount(released)))
}

// rowCount is the rows affected of an unlock that released or did not.
func rowCount(released bool) int64 {
	if released {
		return 1
	}
	return 0
}

// ExpectUnlockAll expects the release of a LockAll lease and answers that
// every key was held: for a single distinct key the unlock of ExpectUnlock,
// else one query that releases them all in the order LockAll took them.
// (It returns no expectation to chain on: the two forms differ in kind; use
// ExpectUnlock, or the mock's own ExpectQuery, for finer control.)
func (m *Mock) ExpectUnlockAll(keys ...keyspace.Key) {
	ks := sorted(keys)
	if len(ks) == 1 {
		m.ExpectUnlock(ks[0], true)
		return
	}
	q, args := sqltext.UnlockMany(style, false, ks)
	m.expect(q, args).WillReturnRows(sqlmock.NewRows([]string{"released"}).AddRow(int64(len(ks))))
}

// ExpectKeepAlive expects one keepalive ping of a held lease and answers with
// the pid of the latest acquire expectation, as the backend holding the lock
// does.
func (m *Mock) ExpectKeepAlive() *sqlmock.ExpectedQuery {
	return m.expect(sqltext.Ping, nil).WillReturnRows(sqlmock.NewRows([]string{"pid"}).AddRow(m.PID()))
}

// ExpectKeepAliveLost expects a keepalive ping and loses the connection
// under it: the lease is lost (Lease.Lost is closed, Lease.Err matches
// advisory.ErrLockLost, Do's context is cancelled).
func (m *Mock) ExpectKeepAliveLost() *sqlmock.ExpectedQuery {
	return m.expect(sqltext.Ping, nil).WillReturnError(connLostError())
}

// ExpectKeepAlivePooler expects a keepalive ping answered by another backend
// than the one that took the lock, as through a pooler in transaction mode:
// the lease is lost with advisory.ErrPooler. advisory then tries, in the
// background, to release the lock before it discards the connection (a
// pooler keeps the server session): follow with ExpectUnlock(key, true)
// (the unlock reached the backend that holds the lock), or with
// ExpectUnlock(key, false) and ExpectEndIdleBackend (it reached another
// one, and advisory ends the holder if it is idle), and let the test wait
// until ExpectationsWereMet is nil.
func (m *Mock) ExpectKeepAlivePooler() *sqlmock.ExpectedQuery {
	return m.expect(sqltext.Ping, nil).WillReturnRows(sqlmock.NewRows([]string{"pid"}).AddRow(m.PID() + poolerPIDOffset))
}

// ExpectEndIdleBackend expects the statements with which advisory ends the
// server sessions that may hold a lock after a pooler sent its unlock
// elsewhere, and answers that each holds nothing any more: the backend that
// took the lock (the mock's current pid) and the one that answered the
// keepalive of ExpectKeepAlivePooler.
func (m *Mock) ExpectEndIdleBackend() {
	for _, pid := range []int{m.PID(), m.PID() + poolerPIDOffset} {
		m.expect(sqltext.EndIdleBackend, []any{int64(pid)}).
			WillReturnRows(sqlmock.NewRows([]string{"done"}).AddRow(true))
	}
}

// poolerPIDOffset is how far from the mock's current pid the backend is
// that answers ExpectKeepAlivePooler's keepalive.
const poolerPIDOffset = 50000

func (m *Mock) expectAcquire(mode sqltext.Mode, key keyspace.Key, timeout time.Duration, acquired bool) *sqlmock.ExpectedQuery {
	return m.expectAcquireAll(mode, []keyspace.Key{key}, timeout, acquired)
}

// expectAcquireAll expects the acquire statement that advisory sends for
// keys (sorted, distinct) and answers as a server that granted all of them
// or, with acquired false, none.
func (m *Mock) expectAcquireAll(mode sqltext.Mode, keys []keyspace.Key, timeout time.Duration, acquired bool) *sqlmock.ExpectedQuery {
	q, args := m.acquireStmt(mode, keys, timeout)
	pid := m.nextPID()
	var row []driver.Value
	switch {
	case len(keys) == 1:
		row = []driver.Value{acquired, pid}
	case acquired:
		row = []driver.Value{int64(len(keys)), pid}
	default:
		row = []driver.Value{int64(0), pid}
	}
	if m.fencing {
		var draw, token driver.Value // NULL when not granted
		if acquired {
			draw, token = m.nextToken(m.fenceTable, keys)
		}
		row = append(row, draw, token)
	}
	cols := []string{"acquired", "pid", "draw", "token"}[:len(row)]
	return m.expect(q, args).WillReturnRows(sqlmock.NewRows(cols).AddRow(row...))
}

// acquireStmt is the statement advisory sends to take keys: one key or
// several, with or without fencing. Its lock_timeout argument matches any
// value up to timeout (see upTo).
func (m *Mock) acquireStmt(mode sqltext.Mode, keys []keyspace.Key, timeout time.Duration) (string, []any) {
	var q string
	var args []any
	switch {
	case len(keys) == 1 && m.fencing:
		q, args = sqltext.LockFenced(style, mode, keys[0], timeout, m.fenceTable)
	case len(keys) == 1:
		q, args = sqltext.Lock(style, mode, keys[0], timeout)
	case m.fencing:
		q, args = sqltext.LockAllFenced(style, mode, keys, timeout, m.fenceTable)
	default:
		q, args = sqltext.LockAll(style, mode, keys, timeout)
	}
	if timeout > 0 {
		args = slices.Clone(args) // the statement's own may be shared
		ms := strconv.FormatInt(max(timeout.Milliseconds(), 1), 10)
		for i, a := range args {
			if a == ms {
				args[i] = upTo{ms: max(timeout.Milliseconds(), 1)}
			}
		}
	}
	return q, args
}

// upTo matches the lock_timeout argument of a session acquire: advisory
// counts the time a Lock waited in the process's queue against
// WithLockTimeout, so the statement carries what is left of it, 1 ms at
// least, which depends on timing.
type upTo struct{ ms int64 }

func (u upTo) Match(v driver.Value) bool {
	s, ok := v.(string)
	if !ok {
		return false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return err == nil && n >= 1 && n <= u.ms
}

func (u upTo) String() string { return "lock_timeout of 1 to " + strconv.FormatInt(u.ms, 10) + " ms" }

// sorted orders keys as advisory.LockAll and txlock.LockAll take them.
func sorted(keys []keyspace.Key) []keyspace.Key {
	ks := slices.Clone(keys)
	slices.SortFunc(ks, keyspace.Compare)
	return slices.Compact(ks)
}

// lockTimeoutError is the error a server returns when lock_timeout ends a
// wait, as pgx reports it.
func lockTimeoutError() error {
	return &pgconn.PgError{Severity: "ERROR", Code: pgerr.LockNotAvailable, Message: "canceling statement due to lock timeout"}
}

// connLost is the error of a statement whose connection the server ended
// (pg_terminate_backend, a restart). It is what both drivers report at once:
// lib/pq reports driver.ErrBadConn, pgx the server's FATAL with SQLSTATE
// 57P01; this error matches errors.Is(err, driver.ErrBadConn) (so
// database/sql drops the connection, as it does under lib/pq) and carries
// SQLSTATE 57P01.
type connLost struct{}

func (connLost) Error() string {
	return "FATAL: terminating connection due to administrator command (SQLSTATE 57P01)"
}
func (connLost) SQLState() string { return pgerr.AdminShutdown }
func (connLost) Unwrap() error    { return driver.ErrBadConn }

func connLostError() error { return connLost{} }
