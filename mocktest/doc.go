// Package mocktest lets code that takes locks with advisory or txlock be unit
// tested without a database, over github.com/DATA-DOG/go-sqlmock.
//
// New returns a *sql.DB backed by the mock and a *Mock whose expectations
// read like what the code under test does; the SQL behind them comes from the
// same internal package that advisory and txlock send it from, so a test
// never spells SQL and cannot drift from what is sent:
//
//	db, m := mocktest.New(t)
//	m.ExpectLock(key)
//	m.ExpectUnlock(key, true)
//	locker := m.Locker() // advisory.New(db, ...) with settings that suit a mock
//	lease, err := locker.Lock(ctx, key)
//	...
//	err = lease.Release(ctx)
//
// and for transaction locks:
//
//	m.ExpectBegin()
//	m.ExpectXactLock(key)
//	m.ExpectExec("UPDATE ...").WillReturnResult(sqlmock.NewResult(0, 1))
//	m.ExpectCommit()
//	err := txlock.Do(ctx, db, key, fn)
//
// Mock embeds sqlmock.Sqlmock, so the code's own statements are expected the
// usual way; the matcher is sqlmock.QueryMatcherEqual (exact text, no
// regular expressions to escape). Expectations are met in order, and New
// registers a cleanup that fails the test if any is left unmet, or if the
// code under test sent anything that no expectation matched: such a call
// fails in the code under test, which may swallow the failure (a release
// that is only logged, a middleware that answers 503), so the test fails
// too, listing each call with what was sent, the expectation that would
// expect it, and what was expected instead. A forgotten ExpectUnlock, or a
// release the test did not expect, fails the test. Lenient makes the mock as
// forgiving as plain go-sqlmock; with Open, ExpectationsWereMet reports the
// same.
//
// The failure modes produce what a real server produces, so the code under
// test sees the same sentinels: ExpectLockTimeout fails the statement with
// SQLSTATE 55P03 (errors.Is(err, advisory.ErrLockTimeout)), ExpectKeepAliveLost
// and ExpectLockConnLost drop the connection (every later call on it fails
// with driver.ErrBadConn and sends nothing, as on a real one: expect no
// ROLLBACK of a transaction whose connection was lost), ExpectUnlock(key,
// false) reports a lock the session no longer held (advisory.ErrLockLost on
// Release).
//
// Session locks are held by a server backend, identified by its pid: every
// acquire expectation answers with a pid of its own (so two leases never
// look like one backend behind a pooler) and ExpectKeepAlive answers with the
// pid of the latest acquire.
//
// For a Locker with advisory.WithFencing, give New WithFencing with the same
// table: the acquire expectations then expect the fenced statements and hand
// out tokens as a fresh fencing table does in the server's first lifetime,
// drawn by a session that knows the epoch (1<<40 + 1, 1<<40 + 2, ... over
// all keys: epoch 1; Token tells the latest of a key), and
// ExpectLockNoFenceTable fails an acquire as a missing table does
// (advisory.ErrNoFenceTable).
//
// A Locker with advisory.Hooks.Contended set tries before it waits: expect
// ExpectTryLock(key, false) followed by ExpectLock(key) for a contended Lock,
// and ExpectTryLock(key, true) alone for an uncontended one.
//
// The middleware package tries first too: Lock and TxLock send a try
// (ExpectTryLock, ExpectXactTryLock) for every request, and with
// middleware.WaitUpTo only a refused try is followed by the wait (ExpectLock,
// or ExpectXactLock with WithLockTimeout of the same duration).
//
// The mock's driver is not lib/pq, so advisory and txlock send keys as $n
// parameters, which is the form these expectations match.
package mocktest
