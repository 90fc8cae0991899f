package sqltext

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// DefaultFenceTable is the name of the fencing counter table when none is
// given (the same value as advisory.DefaultFenceTable).
const DefaultFenceTable = "pgadvisory_fence"

var fenceIdentRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$`)

// QuoteFenceTable validates a fencing table name ("" is DefaultFenceTable):
// letters, digits and underscores, optionally schema.table. It returns the
// name with each part double-quoted, and false for any other name.
func QuoteFenceTable(name string) (string, bool) {
	if name == "" {
		name = DefaultFenceTable
	}
	if !fenceIdentRE.MatchString(name) {
		return "", false
	}
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = `"` + p + `"`
	}
	return strings.Join(parts, "."), true
}

// The fencing table holds one row per key that ever had a token and one
// epoch row. Its kind column tells them apart, with the numbers of
// pg_locks.objsubid for the keys.
const (
	FenceKindEpoch = 0 // the epoch row: key 0, token = the epoch, boot = the server lifetime that set it
	FenceKindInt64 = 1 // a bigint key: key is the key
	FenceKindPair  = 2 // a pair key (a, b): key is a<<32 | uint32(b)
)

// FenceCounterBits is how many low bits of a token count acquisitions of
// one key within one epoch: a token is epoch<<FenceCounterBits | counter.
const FenceCounterBits = 40

// FenceLifetime is the SQL expression that names the running server's
// lifetime: it changes on every restart (the postmaster's start time), on a
// promoted standby (another postmaster), and on crash recovery without a
// postmaster restart (PostgreSQL resets its shared statistics after every
// recovery, which sets the bgwriter's reset time). An explicit
// pg_stat_reset_shared('bgwriter') changes it too, which only costs one more
// epoch. Both times are written in UTC with to_char, so that the text does
// not depend on the session's TimeZone or DateStyle: a plain ::text cast
// does, and sessions with different settings would each see "another
// lifetime" and bump the epoch in turn.
const FenceLifetime = "(to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || ' ' || " +
	"coalesce(to_char(pg_stat_get_bgwriter_stat_reset_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), '-'))"

// fenceEpoch renders the two CTEs every token-taking statement shares, for
// table (a quoted identifier). gateFrom and gateCond, if not empty, are a
// FROM item joined in and a condition on it that must hold for a token to
// be taken (the lock was granted).
//
//   - e reads the epoch row as the statement's snapshot sees it (no row
//     lock): epoch is the epoch this statement's tokens belong to, stale is
//     true when the row was set in another server lifetime than this one.
//     When stale, the epoch is the row's token + 1: either this statement
//     bumps it (b), or a concurrent statement of this lifetime already did
//     (b then updates nothing: the row it waited for, re-checked, is no
//     longer stale), and there is exactly one bump per lifetime, so both
//     give the same number.
//   - b is that bump, at most once per lifetime.
//
// The synchronous_commit of the statement is set by fenceSync.
func fenceEpoch(table, gateFrom, gateCond string) string {
	from := "(SELECT " + FenceLifetime + " AS boot) AS i, " + table + " AS c"
	cond := "c.kind = 0 AND c.key = 0"
	if gateFrom != "" {
		from += ", " + gateFrom
		cond = gateCond + " AND " + cond
	}
	return "e AS (SELECT c.token + (c.boot IS DISTINCT FROM i.boot)::int4 AS epoch, c.boot IS DISTINCT FROM i.boot AS stale, i.boot " +
		"FROM " + from + " WHERE " + cond + "), " +
		"b AS (UPDATE " + table + " AS c SET token = c.token + 1, boot = e.boot FROM e " +
		"WHERE e.stale AND c.kind = 0 AND c.key = 0 AND c.boot IS DISTINCT FROM e.boot RETURNING c.token)"
}

// fenceUpsert renders the CTE f that bumps the counter of every key in rows
// (a FROM list that may use e and yields columns kind int4, v int8): a new
// row starts at the epoch's first token, an existing one goes one past its
// latest committed value or to the epoch's first token, whichever is
// higher. It returns kind, key and the new token.
func fenceUpsert(table, rows string) string {
	return "f AS (INSERT INTO " + table + " AS c (kind, key, token) SELECT n.kind, n.v, (e.epoch << " + strconv.Itoa(FenceCounterBits) + ") + 1 FROM " + rows + ", e " +
		"ON CONFLICT (kind, key) DO UPDATE SET token = GREATEST(c.token + 1, excluded.token) RETURNING c.kind, c.key, c.token)"
}

// fenceSync is a condition, true whenever it is evaluated, that sets
// synchronous_commit for the statement's transaction: off, so that a token
// costs no WAL flush, unless the statement found the epoch stale (it bumped
// the epoch, or raced the statement that did): then the session's own
// setting stays (local if that is off), so the new epoch is durable before
// any token of it is returned.
func fenceSync() string {
	return "set_config('synchronous_commit', CASE WHEN (SELECT e.stale FROM e) THEN " +
		"CASE current_setting('synchronous_commit') WHEN 'off' THEN 'local' ELSE current_setting('synchronous_commit') END " +
		"ELSE 'off' END, true) IS NOT NULL"
}

// packed renders k as the (kind, key) pair that the fencing table stores.
func (b *builder) packed(k keyspace.Key) (string, string) {
	if x, y, ok := k.Pair(); ok {
		return strconv.Itoa(FenceKindPair), b.int8(int64(x)<<32 | int64(uint32(y)))
	}
	n, _ := k.Int64()
	return strconv.Itoa(FenceKindInt64), b.int8(n)
}

// LockFenced is Lock plus a fencing token in the same round trip: when the
// lock is taken, the counter of k in table (a quoted identifier, see
// FenceTable) is bumped in the same statement, within the current epoch
// (see fenceEpoch). It returns one row: (acquired bool, backend pid int4,
// token int8). The token is NULL when not acquired, and also when acquired
// but the table has no epoch row. lock_timeout, when set, also bounds the
// wait for the counter rows; a failure after the grant leaves the lock held
// by the session.
func LockFenced(s Style, m Mode, k keyspace.Key, timeout time.Duration, table string) (string, []any) {
	b := &builder{style: s}
	expr := b.withTimeout(b.acquire("", m, k), timeout)
	kind, v := b.packed(k)
	return "WITH l AS (SELECT " + expr + " AS ok, pg_backend_pid() AS pid), " +
		fenceEpoch(table, "l", "l.ok") + ", " +
		fenceUpsert(table, "(SELECT "+kind+" AS kind, "+v+" AS v) AS n") + " " +
		"SELECT l.ok, l.pid, (SELECT token FROM f) FROM l WHERE " + fenceSync(), b.args
}

// LockAllFenced is LockAll plus one fencing token per key in the same round
// trip, bumped only when every key was taken. It returns one row: (acquired
// int8, backend pid int4, tokens as text: comma-separated decimal integers in
// the order of keys, NULL when not all were taken or the table has no epoch
// row).
func LockAllFenced(s Style, m Mode, keys []keyspace.Key, timeout time.Duration, table string) (string, []any) {
	b := &builder{style: s}
	expr := b.withTimeout(b.lockAll("", m, keys), timeout)
	v, p := b.keyArrays(keys)
	return "WITH l AS (SELECT " + expr + " AS n, pg_backend_pid() AS pid), " +
		"k AS (SELECT u.v, CASE WHEN u.p THEN " + strconv.Itoa(FenceKindPair) + " ELSE " + strconv.Itoa(FenceKindInt64) + " END AS kind, u.ord " +
		"FROM unnest(" + v + ", " + p + ") WITH ORDINALITY AS u(v, p, ord)), " +
		fenceEpoch(table, "l", "l.n = "+strconv.Itoa(len(keys))) + ", " +
		fenceUpsert(table, "k AS n") + " " +
		"SELECT l.n, l.pid, (SELECT string_agg(f.token::text, ',' ORDER BY k.ord) FROM f JOIN k ON f.key = k.v AND f.kind = k.kind) " +
		"FROM l WHERE " + fenceSync(), b.args
}

// FenceNext bumps the fencing counter of k in table (a quoted identifier) in
// a statement of its own, with the epoch logic of LockFenced, and returns
// one row: (token int8, NULL when the table has no epoch row). txlock sends
// it outside the caller's transaction, in autocommit, so that a token once
// returned is never rolled back.
func FenceNext(s Style, k keyspace.Key, table string) (string, []any) {
	b := &builder{style: s}
	kind, v := b.packed(k)
	return "WITH " + fenceEpoch(table, "", "") + ", " +
		fenceUpsert(table, "(SELECT "+kind+" AS kind, "+v+" AS v) AS n") + " " +
		"SELECT (SELECT token FROM f) WHERE " + fenceSync(), b.args
}

// FenceCurrent reads the fencing state of k in table (a quoted identifier)
// without changing it: one row (token int8: the latest token of k that the
// table records, 0 if none; epoch int8: the epoch row's value), or no row
// when the table has no epoch row. After a crash the recorded token can be
// below the latest one handed out (tokens commit asynchronously); the next
// token is above both.
func FenceCurrent(s Style, k keyspace.Key, table string) (string, []any) {
	b := &builder{style: s}
	kind, v := b.packed(k)
	return "SELECT coalesce((SELECT c.token FROM " + table + " AS c WHERE c.kind = " + kind + " AND c.key = " + v + "), 0), e.token " +
		"FROM " + table + " AS e WHERE e.kind = 0 AND e.key = 0", b.args
}

// FenceTable returns the statements that create the fencing table, for a
// table name that is already a quoted identifier: the table if it does not
// exist, then its epoch row if it is missing. Both are idempotent; on a
// table of another layout the second fails (SQLSTATE 42703 or 42P10).
func FenceTable(table string) []string {
	return []string{
		"CREATE TABLE IF NOT EXISTS " + table + " (" +
			"kind int2 NOT NULL CHECK (kind IN (0, 1, 2)), key int8 NOT NULL, token int8 NOT NULL, boot text, PRIMARY KEY (kind, key))",
		"INSERT INTO " + table + " (kind, key, token, boot) VALUES (0, 0, 0, NULL) ON CONFLICT (kind, key) DO NOTHING",
	}
}

// Prepared is a fenced statement as a session-level prepared statement, for
// drivers that would otherwise send its text to be planned on every call
// (lib/pq, with the Inline style). The fenced statements cost far more to
// plan than to run (measured here: about 0.2 ms of planning, 0.1 ms of
// execution, on a statement that a prepared generic plan runs without
// planning), so such drivers send Execute, and when the session does not
// know the name yet (SQLSTATE 26000), Prepare and then Execute again. The
// name is derived from the text, so every session prepares each statement
// at most once and nothing needs to be tracked on the client.
type Prepared struct {
	Name    string // pgadvisory_fence_ and 16 hex digits of the text's SHA-256
	Prepare string // PREPARE Name AS the statement
	Execute string // EXECUTE Name(the arguments as quoted literals)
}

// PrepareFenced makes the Prepared form of q, a statement built in the
// Params style (its $n placeholders carry their types as casts), with its
// arguments args (int64 and strings of digits, signs, commas, braces and
// t/f, as the builders make them).
func PrepareFenced(q string, args []any) Prepared {
	name, prepare := preparedName(q)
	var b strings.Builder
	b.WriteString("EXECUTE " + name)
	for i, a := range args {
		if i == 0 {
			b.WriteByte('(')
		} else {
			b.WriteString(", ")
		}
		var lit string
		switch v := a.(type) {
		case int64:
			lit = strconv.FormatInt(v, 10)
		case string:
			lit = v
		default:
			lit = fmt.Sprint(v)
		}
		b.WriteString("'" + strings.ReplaceAll(lit, "'", "''") + "'")
	}
	if len(args) > 0 {
		b.WriteByte(')')
	}
	return Prepared{Name: name, Prepare: prepare, Execute: b.String()}
}

// preparedNames caches, per statement text, its prepared statement's name
// and PREPARE text: the texts are few (one per shape of statement and
// table), and hashing a text of a kilobyte on every acquire would be work
// repeated on the hot path.
var preparedNames sync.Map // text -> [2]string{name, prepare}

// preparedName returns the name and the PREPARE statement of text q.
func preparedName(q string) (name, prepare string) {
	if v, ok := preparedNames.Load(q); ok {
		np := v.([2]string)
		return np[0], np[1]
	}
	sum := sha256.Sum256([]byte(q))
	name = "pgadvisory_fence_" + hex.EncodeToString(sum[:8])
	prepare = "PREPARE " + name + " AS " + q
	preparedNames.Store(q, [2]string{name, prepare})
	return name, prepare
}
