// Package sqltext holds every SQL statement that advisory and txlock send, in
// one place, so that mocktest can expect exactly what is sent and a change to
// the text shows up in its tests.
//
// Keys reach the server in one of two styles. Params passes them as $n
// parameters; Inline writes them into the text as quoted integer literals
// formatted with strconv (never user text). Which is faster depends on the
// driver: lib/pq prepares a parameterised statement in an extra round trip,
// pgx caches prepared statements by text. StyleOf picks per driver.
package sqltext

import (
	"database/sql/driver"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Style is how keys are written into a statement.
type Style uint8

const (
	// Params passes keys as $n parameters.
	Params Style = iota
	// Inline writes keys into the text as quoted integer literals.
	Inline
)

// StyleOf returns the style that suits the driver: Inline for lib/pq, Params
// for everything else (pgx's stdlib, sqlmock, unknown drivers).
func StyleOf(d driver.Driver) Style {
	if isLibPQ(d) {
		return Inline
	}
	return Params
}

// DeadlineInterrupts reports whether a context that ends can cut short a
// statement whose answer does not come. pgx closes the socket when the
// context ends. lib/pq only sends the server a cancel request on a new
// connection: that cannot cut short a statement that never waits on the
// server (an unlock), and cannot reach a server behind a dead network, so
// a deadline there costs a watcher goroutine per statement and bounds
// nothing; such a statement is bounded by the TCP settings of the
// connection.
func DeadlineInterrupts(d driver.Driver) bool { return !isLibPQ(d) }

// isLibPQ reports whether d is lib/pq's driver (without importing it).
func isLibPQ(d driver.Driver) bool { return typeName(d) == "*pq.Driver" }

// typeName is fmt's %T of d, without fmt's allocations.
func typeName(d driver.Driver) string {
	if d == nil {
		return "<nil>"
	}
	return reflect.TypeOf(d).String()
}

// KeepsBackend reports whether every connection of d talks to one server
// backend for its whole life, so that the backend pid learnt once stays
// true: lib/pq and pgx's stdlib (a pooler in transaction mode breaks that
// for either, which the keepalive of a lease catches). False for any other
// driver, such as go-sqlmock or an unknown wrapper.
func KeepsBackend(d driver.Driver) bool {
	switch typeName(d) {
	case "*pq.Driver", "*stdlib.Driver":
		return true
	}
	return false
}

// Mode selects the lock function family.
type Mode struct {
	Shared bool // pg_advisory_lock_shared and friends instead of the exclusive ones
	Try    bool // pg_try_advisory_lock and friends: answer at once instead of waiting
}

// EndIdleBackend frees the session-level advisory locks of backend $1, a
// pooler's server session that still holds locks a client took through it
// and can no longer reach: on $1 itself (the pooler sent the statement
// there) it releases them all; elsewhere it ends $1 if $1 is idle (between
// transactions, so no client's transaction is interrupted). Its one column
// tells whether $1 holds no advisory lock any more, or was ended.
const EndIdleBackend = `SELECT CASE
	WHEN NOT EXISTS (SELECT FROM pg_locks WHERE pid = $1 AND locktype = 'advisory') THEN true
	WHEN pg_backend_pid() = $1 THEN (SELECT true FROM pg_advisory_unlock_all())
	ELSE COALESCE((SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE pid = $1 AND state = 'idle'), false) END AS done`

// Ping is the keepalive: one round trip that also tells which backend answers.
const Ping = "SELECT pg_backend_pid()"

// UnlockAll releases every session-level advisory lock of the session.
const UnlockAll = "SELECT pg_advisory_unlock_all()"

// builder accumulates the text and the arguments of one statement.
type builder struct {
	style Style
	args  []any
}

// int8 renders one bigint value.
func (b *builder) int8(n int64) string {
	return b.integer(n, "::int8")
}

// int4 renders one int4 value.
func (b *builder) int4(n int32) string {
	return b.integer(int64(n), "::int4")
}

// integer renders n with the cast: a quoted literal (Inline) or the next
// parameter. The text is built in one allocation.
func (b *builder) integer(n int64, cast string) string {
	var buf [40]byte
	t := buf[:0]
	if b.style == Inline {
		t = append(t, '\'')
		t = strconv.AppendInt(t, n, 10)
		t = append(t, '\'')
	} else {
		if b.args == nil {
			b.args = make([]any, 0, 4)
		}
		b.args = append(b.args, n)
		t = append(t, '$')
		t = strconv.AppendInt(t, int64(len(b.args)), 10)
	}
	return string(append(t, cast...))
}

// text renders a text value (only ever built from integers here).
func (b *builder) text(s string) string {
	if b.style == Inline {
		return "'" + s + "'"
	}
	b.args = append(b.args, s)
	return "$" + strconv.Itoa(len(b.args)) + "::text"
}

// key renders the argument list of a lock function for k.
func (b *builder) key(k keyspace.Key) string {
	if x, y, ok := k.Pair(); ok {
		return b.int4(x) + ", " + b.int4(y)
	}
	n, _ := k.Int64()
	return b.int8(n)
}

func fn(scope string, m Mode) string {
	return fnNames[index(scope == "xact_")][index(m.Try)][index(m.Shared)]
}

// index is 1 for true, 0 for false.
func index(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fnNames holds the lock function names, [transaction scope][try][shared],
// so that building a statement costs no allocation for the name.
var fnNames = [2][2][2]string{
	{
		{"pg_advisory_lock", "pg_advisory_lock_shared"},
		{"pg_try_advisory_lock", "pg_try_advisory_lock_shared"},
	},
	{
		{"pg_advisory_xact_lock", "pg_advisory_xact_lock_shared"},
		{"pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared"},
	},
}

// acquire is the expression that takes k and yields a boolean: true when
// held, false when a try found it taken. The waiting functions return void,
// a value that is never null, so "IS NOT NULL" yields true once they return
// (cheaper for the server than a scalar subquery over the function, which
// costs a function scan and its tuplestore per call).
func (b *builder) acquire(scope string, m Mode, k keyspace.Key) string {
	if m.Try {
		return fn(scope, m) + "(" + b.key(k) + ")"
	}
	return "(" + fn(scope, m) + "(" + b.key(k) + ") IS NOT NULL)"
}

// millis renders a lock_timeout in milliseconds, at least 1 (0 would mean no
// timeout at all).
func millis(d time.Duration) string {
	ms := d.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	return strconv.FormatInt(ms, 10)
}

// withTimeout makes expr run with lock_timeout set for this transaction only;
// CASE evaluates its condition first, so the setting is in force before the
// lock waits. Outside a transaction block the statement is its own
// transaction, so the setting ends with the statement.
func (b *builder) withTimeout(expr string, timeout time.Duration) string {
	if timeout <= 0 {
		return expr
	}
	return "CASE WHEN set_config('lock_timeout', " + b.text(millis(timeout)) + ", true) IS NOT NULL THEN " + expr + " END"
}

// Lock is the session-level acquire of k. It returns one row: (acquired bool,
// backend pid int4). With timeout > 0 the wait is bounded by the server's
// lock_timeout for this statement only.
func Lock(s Style, m Mode, k keyspace.Key, timeout time.Duration) (string, []any) {
	return single(s, lockTexts[index(m.Shared)][index(m.Try)][index(k.IsPair())][index(timeout > 0)], k, timeout)
}

// LockExec is Lock for a connection whose backend pid is already known, to
// be sent with Exec: it returns one empty row if k is now held, none if a
// try found it taken, so the rows affected say which.
func LockExec(s Style, m Mode, k keyspace.Key, timeout time.Duration) (string, []any) {
	return single(s, lockExecTexts[index(m.Shared)][index(m.Try)][index(k.IsPair())][index(timeout > 0)], k, timeout)
}

// buildLockExec builds the text of LockExec (see single.go).
func buildLockExec(s Style, m Mode, k keyspace.Key, timeout time.Duration) (string, []any) {
	b := &builder{style: s}
	return "SELECT WHERE " + b.withTimeout(b.acquire("", m, k), timeout), b.args
}

// buildLock builds the text of Lock (see single.go).
func buildLock(s Style, m Mode, k keyspace.Key, timeout time.Duration) (string, []any) {
	b := &builder{style: s}
	expr := b.withTimeout(b.acquire("", m, k), timeout)
	return "SELECT " + expr + ", pg_backend_pid()", b.args
}

// Unlock is the session-level release of k, to be sent with Exec: it returns
// one empty row if the session held k in that mode and released it, none if
// it did not, so the rows affected say which. (Exec, unlike a query, costs no
// result set and no context watcher in database/sql.)
func Unlock(s Style, shared bool, k keyspace.Key) (string, []any) {
	return single(s, unlockTexts[index(shared)][index(k.IsPair())], k, 0)
}

// buildUnlock builds the text of Unlock (see single.go).
func buildUnlock(s Style, shared bool, k keyspace.Key) (string, []any) {
	b := &builder{style: s}
	if shared {
		return "SELECT WHERE pg_advisory_unlock_shared(" + b.key(k) + ")", b.args
	}
	return "SELECT WHERE pg_advisory_unlock(" + b.key(k) + ")", b.args
}

// XactLock is the transaction-level acquire of k. It returns one row:
// (acquired bool). With timeout > 0 the wait is bounded by lock_timeout, and
// the transaction's own lock_timeout is put back in the same statement.
func XactLock(s Style, m Mode, k keyspace.Key, timeout time.Duration) (string, []any) {
	return single(s, xactTexts[index(m.Shared)][index(m.Try)][index(k.IsPair())][index(timeout > 0)], k, timeout)
}

// XactLockExec is XactLock to be sent with Exec: it returns one empty row if
// k is now held, none if a try found it taken, so the rows affected say
// which (Exec costs the driver and database/sql no result set).
func XactLockExec(s Style, m Mode, k keyspace.Key, timeout time.Duration) (string, []any) {
	return single(s, xactExecTexts[index(m.Shared)][index(m.Try)][index(k.IsPair())][index(timeout > 0)], k, timeout)
}

// buildXactLockExec builds the text of XactLockExec (see single.go).
func buildXactLockExec(s Style, m Mode, k keyspace.Key, timeout time.Duration) (string, []any) {
	b := &builder{style: s}
	expr := b.acquire("xact_", m, k)
	if timeout <= 0 {
		return "SELECT WHERE " + expr, b.args
	}
	return "SELECT WHERE (" + b.restoring(expr, timeout) + ")", b.args
}

// buildXactLock builds the text of XactLock (see single.go).
func buildXactLock(s Style, m Mode, k keyspace.Key, timeout time.Duration) (string, []any) {
	b := &builder{style: s}
	return b.restoring(b.acquire("xact_", m, k), timeout), b.args
}

// restoring wraps a boolean expression that runs inside the caller's
// transaction so that a lock_timeout set for it is restored afterwards. The
// OFFSET 0 fences keep the planner from merging the levels: the old value is
// read first, the lock is taken with the new value, then the old value is put
// back, each level feeding the next.
func (b *builder) restoring(expr string, timeout time.Duration) string {
	if timeout <= 0 {
		return "SELECT " + expr
	}
	return "SELECT ok FROM (SELECT ok, set_config('lock_timeout', prev, true) AS restored FROM (" +
		"SELECT prev, " + b.withTimeout(expr, timeout) + " AS ok FROM (" +
		"SELECT current_setting('lock_timeout') AS prev OFFSET 0) p OFFSET 0) l OFFSET 0) r WHERE restored IS NOT NULL"
}

// keyArrays renders keys as two array expressions: a bigint array (pairs
// packed as a<<32 | uint32(b)) and a bool array that marks the pairs. The
// statements that take them must make the server convert each array once
// (MATERIALIZED, or an OFFSET 0 fence): a parameter's cast pulled into every
// row is re-parsed per key, quadratic in the number of keys (measured here:
// 3,000 keys as parameters 5.7 s instead of 58 ms).
func (b *builder) keyArrays(keys []keyspace.Key) (v, p string) {
	var vals, pairs strings.Builder
	vals.WriteByte('{')
	pairs.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			vals.WriteByte(',')
			pairs.WriteByte(',')
		}
		if x, y, ok := k.Pair(); ok {
			vals.WriteString(strconv.FormatInt(int64(x)<<32|int64(uint32(y)), 10))
			pairs.WriteByte('t')
		} else {
			n, _ := k.Int64()
			vals.WriteString(strconv.FormatInt(n, 10))
			pairs.WriteByte('f')
		}
	}
	vals.WriteByte('}')
	pairs.WriteByte('}')
	return b.text(vals.String()) + "::int8[]", b.text(pairs.String()) + "::bool[]"
}

// lockAll renders a scalar subquery that takes every key of keys strictly in
// slice order and yields how many it holds: each step of the recursive CTE
// depends on the one before, so no plan can reorder them, and a try stops at
// the first refusal. The keys go as a bigint array (pairs packed as
// a<<32 | uint32(b)) and a flag array that marks the pairs.
func (b *builder) lockAll(scope string, m Mode, keys []keyspace.Key) string {
	v, p := b.keyArrays(keys)
	one := fn(scope, m) + "(k.v[t.i + 1])"
	two := fn(scope, m) + "((k.v[t.i + 1] >> 32)::int4, ((k.v[t.i + 1] << 32) >> 32)::int4)"
	if !m.Try {
		one = "(" + one + " IS NOT NULL)"
		two = "(" + two + " IS NOT NULL)"
	}
	return "(WITH RECURSIVE k(v, p) AS MATERIALIZED (SELECT " + v + ", " + p + "), " +
		"t(i, ok) AS (SELECT 0, true UNION ALL " +
		"SELECT t.i + 1, CASE WHEN k.p[t.i + 1] THEN " + two + " ELSE " + one + " END " +
		"FROM t, k WHERE t.ok AND t.i < cardinality(k.v)) " +
		"SELECT count(*) FILTER (WHERE ok) - 1 FROM t)"
}

// LockAll is the session-level acquire of every key, in the order given (the
// caller sorts and de-duplicates), in one round trip. It returns one row:
// (acquired int8, backend pid int4); acquired is how many keys are now held,
// from the first, and is less than len(keys) only when a try found one taken.
// With timeout > 0 every wait is bounded by lock_timeout for this statement
// only. On an error the keys acquired before it stay held by the session.
func LockAll(s Style, m Mode, keys []keyspace.Key, timeout time.Duration) (string, []any) {
	b := &builder{style: s}
	expr := b.withTimeout(b.lockAll("", m, keys), timeout)
	return "SELECT " + expr + ", pg_backend_pid()", b.args
}

// XactLockAll is the transaction-level acquire of every key, in the order
// given, in one round trip. It returns one row: (acquired int8). With
// timeout > 0 the waits are bounded by lock_timeout and the transaction's own
// setting is put back in the same statement.
func XactLockAll(s Style, m Mode, keys []keyspace.Key, timeout time.Duration) (string, []any) {
	b := &builder{style: s}
	return b.restoring(b.lockAll("xact_", m, keys), timeout), b.args
}

// ExposesSocket reports whether the connections of d lead to their socket
// through exported methods: pgx's stdlib (Conn().PgConn().Conn()). A
// statement on such a connection can be interrupted without a context, by
// setting the socket's deadline.
func ExposesSocket(d driver.Driver) bool { return typeName(d) == "*stdlib.Driver" }
