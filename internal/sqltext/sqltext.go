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
	"fmt"
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
	if fmt.Sprintf("%T", d) == "*pq.Driver" {
		return Inline
	}
	return Params
}

// Mode selects the lock function family.
type Mode struct {
	Shared bool // pg_advisory_lock_shared and friends instead of the exclusive ones
	Try    bool // pg_try_advisory_lock and friends: answer at once instead of waiting
}

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
	if b.style == Inline {
		return "'" + strconv.FormatInt(n, 10) + "'::int8"
	}
	b.args = append(b.args, n)
	return "$" + strconv.Itoa(len(b.args)) + "::int8"
}

// int4 renders one int4 value.
func (b *builder) int4(n int32) string {
	if b.style == Inline {
		return "'" + strconv.FormatInt(int64(n), 10) + "'::int4"
	}
	b.args = append(b.args, int64(n))
	return "$" + strconv.Itoa(len(b.args)) + "::int4"
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
	name := "pg_advisory_" + scope + "lock"
	if m.Try {
		name = "pg_try_advisory_" + scope + "lock"
	}
	if m.Shared {
		name += "_shared"
	}
	return name
}

// acquire is the expression that takes k and yields a boolean: true when
// held, false when a try found it taken. The waiting functions return void,
// so they are wrapped in a scalar subquery that yields true once they return.
func (b *builder) acquire(scope string, m Mode, k keyspace.Key) string {
	call := fn(scope, m) + "(" + b.key(k) + ")"
	if m.Try {
		return call
	}
	return "(SELECT true FROM " + call + ")"
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
	b := &builder{style: s}
	expr := b.withTimeout(b.acquire("", m, k), timeout)
	return "SELECT " + expr + ", pg_backend_pid()", b.args
}

// Unlock is the session-level release of k. It returns one row: (released
// bool); false means the session did not hold k in that mode.
func Unlock(s Style, shared bool, k keyspace.Key) (string, []any) {
	b := &builder{style: s}
	name := "pg_advisory_unlock"
	if shared {
		name += "_shared"
	}
	return "SELECT " + name + "(" + b.key(k) + ")", b.args
}

// XactLock is the transaction-level acquire of k. It returns one row:
// (acquired bool). With timeout > 0 the wait is bounded by lock_timeout, and
// the transaction's own lock_timeout is put back in the same statement.
func XactLock(s Style, m Mode, k keyspace.Key, timeout time.Duration) (string, []any) {
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
		one = "(SELECT true FROM " + one + ")"
		two = "(SELECT true FROM " + two + ")"
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
