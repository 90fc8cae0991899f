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

// DefaultFenceTable is the name of the fencing table when none is given (the
// same value as advisory.DefaultFenceTable).
const DefaultFenceTable = "pgadvisory_fence"

// The table part is at most 59 bytes, so that the sequence's name (the
// table's plus "_seq") fits PostgreSQL's 63.
var fenceIdentRE = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]{0,62}\.)?[A-Za-z_][A-Za-z0-9_]{0,58}$`)

// QuoteFenceTable validates a fencing table name ("" is DefaultFenceTable):
// letters, digits and underscores, at most 59 bytes, optionally
// schema.table. It returns the name with each part double-quoted, and false
// for any other name.
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

// FenceSeq is the sequence of the fencing table table (a quoted identifier,
// as QuoteFenceTable returns): the table's name plus "_seq", in its schema.
func FenceSeq(table string) string {
	return strings.TrimSuffix(table, `"`) + `_seq"`
}

// FenceSetting is the name of the session setting in which a backend keeps
// what it knows of the epoch of table (a quoted identifier): "offset,limit",
// so that a draw s below limit has the token s + offset. One setting per
// table; a custom setting with a dot in its name needs no privilege.
func FenceSetting(table string) string {
	if v, ok := fenceSettings.Load(table); ok {
		return v.(string)
	}
	sum := sha256.Sum256([]byte(table))
	name := "pgadvisory.fence_" + hex.EncodeToString(sum[:8])
	fenceSettings.Store(table, name)
	return name
}

var fenceSettings sync.Map // quoted table -> setting name

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

// fenceToken renders the token of a draw: the draw (column s of the FROM
// item n) plus the session's cached offset when the draw is below the cached
// limit (the setting's value, column c of n), else NULL: no cache yet in this
// session, or the draw left the epoch's window, and the caller resolves the
// draw (internal/fencing.Resolve).
func fenceToken() string {
	return "CASE WHEN n.s < nullif(split_part(n.c, ',', 2), '')::int8 THEN n.s + nullif(split_part(n.c, ',', 1), '')::int8 END"
}

// fenceCache renders the read of the session's cache of table.
func fenceCache(table string) string {
	return "current_setting('" + FenceSetting(table) + "', true)"
}

// nextval renders the draw from the sequence of table.
func nextval(table string) string {
	return "nextval('" + FenceSeq(table) + "'::regclass)"
}

// asyncCommit is a condition, true whenever it is evaluated, that makes the
// statement's transaction commit without waiting for the WAL flush: a draw
// that a crash loses is covered by the epoch, which goes up durably after
// every crash before any token of it is handed out.
const asyncCommit = asyncCommitItem + " IS NOT NULL"

// asyncCommitItem sets synchronous_commit off for the statement's
// transaction (see asyncCommit), as a select list item.
const asyncCommitItem = "set_config('synchronous_commit', 'off', true)"

// LockFenced is Lock plus a fencing draw in the same round trip: when the
// lock is taken, nextval of the table's sequence (table: a quoted
// identifier, see QuoteFenceTable), in a transaction that commits
// asynchronously. It returns one row: (acquired bool, backend pid int4, draw
// int8, token int8). draw is NULL when not acquired; token is the draw's
// token when the session's cache of the epoch covers it, else NULL, and the
// caller resolves the draw (internal/fencing). lock_timeout, when set,
// bounds the wait for the lock only; a failure after the grant (a missing
// sequence) leaves the lock held by the session.
func LockFenced(s Style, m Mode, k keyspace.Key, timeout time.Duration, table string) (string, []any) {
	return single(s, lockFencedTexts(table)[index(m.Shared)][index(m.Try)][index(k.IsPair())][index(timeout > 0)], k, timeout)
}

// buildLockFenced builds the text of LockFenced: one subquery, kept apart
// by OFFSET 0 so that it runs once, in which CASE takes the lock before it
// draws (a draw must come after the grant: the next holder's draw then
// comes after this one's). Measured with pgbench at 8 clients here, this
// form ran at 0.87 of plain lock+unlock, the CTE form of LockAllFenced at
// 0.84.
func buildLockFenced(s Style, m Mode, k keyspace.Key, timeout time.Duration, table string) (string, []any) {
	b := &builder{style: s}
	expr := b.withTimeout(b.acquire("", m, k), timeout)
	return "SELECT n.s IS NOT NULL, pg_backend_pid(), n.s, " + fenceToken() + " FROM (SELECT CASE WHEN " + expr + " THEN " + nextval(table) + " END AS s, " +
		fenceCache(table) + " AS c, " + asyncCommitItem + " AS a OFFSET 0) AS n", b.args
}

// fencedTexts holds the texts of LockFenced of one table, as the texts of
// the plain statements are held (single.go): [shared][try][pair][timeout].
type fencedTexts [2][2][2][2]*template

// lockFencedTexts returns the texts of LockFenced for table, built the first
// time a table is met: the acquire on the hot path of a fenced Locker
// builds no text.
func lockFencedTexts(table string) *fencedTexts {
	if v, ok := lockFencedByTable.Load(table); ok {
		return v.(*fencedTexts)
	}
	t := new(fencedTexts)
	keys := [2]keyspace.Key{keyspace.Int64(0), keyspace.Pair(0, 0)}
	timeouts := [2]time.Duration{0, time.Second}
	for sh := range 2 {
		for try := range 2 {
			for p, k := range keys {
				for d, timeout := range timeouts {
					t[sh][try][p][d] = newTemplate(buildLockFenced(Params, Mode{Shared: sh == 1, Try: try == 1}, k, timeout, table))
				}
			}
		}
	}
	v, _ := lockFencedByTable.LoadOrStore(table, t)
	return v.(*fencedTexts)
}

var lockFencedByTable sync.Map // quoted table -> *fencedTexts

// fenced renders the fenced acquire of LockAllFenced around acquire (a
// select list item that takes the locks, named n) and granted (the
// condition on l that says all were taken).
func fenced(acquire, granted, table string) string {
	return "WITH l AS MATERIALIZED (SELECT " + acquire + ", pg_backend_pid() AS pid), " +
		"n AS MATERIALIZED (SELECT " + nextval(table) + " AS s, " + fenceCache(table) + " AS c FROM l WHERE " + granted + " AND " + asyncCommit + ") " +
		"SELECT l.*, n.s, " + fenceToken() + " FROM l LEFT JOIN n ON true"
}

// LockAllFenced is LockAll plus one fencing draw in the same round trip,
// taken only when every key was taken: every key of the set gets the same
// token. It returns one row: (acquired int8, backend pid int4, draw int8,
// token int8), draw and token as in LockFenced.
func LockAllFenced(s Style, m Mode, keys []keyspace.Key, timeout time.Duration, table string) (string, []any) {
	b := &builder{style: s}
	expr := b.withTimeout(b.lockAll("", m, keys), timeout)
	return fenced(expr+" AS n", "l.n = "+strconv.Itoa(len(keys)), table), b.args
}

// FenceDraw draws a fencing token from the sequence of table (a quoted
// identifier) in a statement of its own, committed asynchronously, outside
// any transaction block (txlock.NextToken sends it on a pooled connection).
// It returns one row: (draw int8, token int8), token as in LockFenced.
func FenceDraw(table string) string {
	return "SELECT n.s, " + fenceToken() + " FROM (SELECT " + nextval(table) + " AS s, " + fenceCache(table) + " AS c WHERE " + asyncCommit + ") AS n"
}

// FenceDrawTx draws a fencing token from the sequence of table (a quoted
// identifier) inside the caller's transaction, whose commit it leaves as it
// is: a draw is never undone, not even by a rollback. It returns one row:
// (draw int8, token int8), token as in LockFenced; draw is NULL in a
// read-only transaction, which cannot call nextval (the caller then draws
// on another connection).
func FenceDrawTx(table string) string {
	return "SELECT n.s, " + fenceToken() + " FROM (SELECT CASE WHEN current_setting('transaction_read_only') = 'off' THEN " + nextval(table) + " END AS s, " +
		fenceCache(table) + " AS c) AS n"
}

// FenceRedraw is a bare draw from the sequence of table, committed
// asynchronously: one row (draw int8). internal/fencing sends it when a
// draw fell below the window of the epoch that a concurrent bump started.
func FenceRedraw(table string) string {
	return "SELECT " + nextval(table) + " WHERE " + asyncCommit
}

// FenceRead reads the epoch row of table (a quoted identifier): one row
// (epoch int8, base int8, current bool: whether the epoch was set in this
// server lifetime), or none when the row is missing.
func FenceRead(table string) string {
	return "SELECT c.epoch, c.base, c.boot IS NOT DISTINCT FROM " + FenceLifetime + " FROM " + table + " AS c"
}

// FenceBump starts a new epoch of table (a quoted identifier) if the epoch
// is still seen (another session may have started one meanwhile): epoch + 1,
// base as the new window's base, the current server lifetime; and moves the
// sequence to base if it is below it, so that every later draw is above
// the windows of all earlier epochs. Its commit waits for the WAL flush (the
// session's synchronous_commit, local if that is off), so that the epoch is
// durable before any token of it is handed out. It returns one row (epoch
// int8, the sequence's new value or NULL) when it bumped, none when the
// epoch had moved on (nothing changed then).
func FenceBump(table string, seen, base int64) string {
	seq := FenceSeq(table)
	b := strconv.FormatInt(base, 10)
	return "WITH u AS (UPDATE " + table + " AS c SET epoch = c.epoch + 1, base = " + b + ", boot = " + FenceLifetime +
		" WHERE c.epoch = " + strconv.FormatInt(seen, 10) + " RETURNING c.epoch) " +
		"SELECT u.epoch, (SELECT CASE WHEN q.last_value < " + b + " THEN setval('" + seq + "'::regclass, " + b + ") END FROM " + seq + " AS q) FROM u " +
		"WHERE set_config('synchronous_commit', CASE current_setting('synchronous_commit') WHEN 'off' THEN 'local' ELSE current_setting('synchronous_commit') END, true) IS NOT NULL"
}

// FenceSetCache stores value ("offset,limit") as the session's cache of the
// epoch of table (a quoted identifier). Set inside a transaction block, it
// is undone by a rollback. It returns one row: (value text, backend pid
// int4), the pid so that a caller can tell that a pooler moved it to
// another backend since its acquire.
func FenceSetCache(table, value string) string {
	return "SELECT set_config('" + FenceSetting(table) + "', '" + value + "', false), pg_backend_pid()"
}

// FenceLayout describes what a relation of the fencing table's name is: one
// row (columns text: the table's column names in order, comma-separated,
// NULL when there is no such table; seq bool: whether its sequence exists).
func FenceLayout(table string) string {
	return "SELECT (SELECT string_agg(a.attname::text, ',' ORDER BY a.attnum) FROM pg_attribute AS a WHERE a.attrelid = to_regclass('" + table + "') AND a.attnum > 0 AND NOT a.attisdropped), " +
		"to_regclass('" + FenceSeq(table) + "') IS NOT NULL"
}

// FenceColumns are the columns of the fencing table, in order, as
// FenceLayout reports them.
var FenceColumns = []string{"one", "epoch", "base", "boot"}

// FenceOldColumns are the columns of the per-key layout of earlier versions.
var FenceOldColumns = []string{"kind", "key", "token", "boot"}

// FenceTable returns the statements that create the fencing table, for a
// table name that is already a quoted identifier: the table, its sequence
// and its one row, each only if missing. The row holds the epoch, the base
// of its window of draws, and the server lifetime that set it.
func FenceTable(table string) []string {
	return []string{
		"CREATE TABLE IF NOT EXISTS " + table + " (" +
			"one bool PRIMARY KEY DEFAULT true CHECK (one), epoch int8 NOT NULL CHECK (epoch >= 0), base int8 NOT NULL, boot text)",
		"CREATE SEQUENCE IF NOT EXISTS " + FenceSeq(table) + " AS int8 MINVALUE 1 NO CYCLE",
		"INSERT INTO " + table + " (one, epoch, base, boot) VALUES (true, 0, 0, NULL) ON CONFLICT (one) DO NOTHING",
	}
}

// FenceMigrate returns the statements that turn a table of the per-key
// layout of earlier versions (kind, key, token, boot) into the current
// layout, in one transaction: the new epoch starts above the highest token
// the old table records (tokens of the old layout are epoch<<40 | counter
// too), so that every new token is above every old one; at the first token
// the epoch goes up once more (the row's lifetime is unset). The per-key
// rows are dropped with the old table.
func FenceMigrate(table string) []string {
	create := FenceTable(table)
	return []string{
		"BEGIN",
		"LOCK TABLE " + table + " IN ACCESS EXCLUSIVE MODE",
		"CREATE TEMPORARY TABLE pgadvisory_fence_highest ON COMMIT DROP AS SELECT coalesce(max(o.token), 0) AS token FROM " + table + " AS o",
		"DROP TABLE " + table,
		create[0],
		create[1],
		"INSERT INTO " + table + " (one, epoch, base, boot) SELECT true, (h.token >> " + strconv.Itoa(FenceCounterBits) + ") + 1, 0, NULL FROM pgadvisory_fence_highest AS h",
		"COMMIT",
	}
}

// FenceCounterBits is how many low bits of a token count draws within one
// epoch: a token is epoch<<FenceCounterBits | counter.
const FenceCounterBits = 40

// FenceStatus reads what pglock fence show prints: one row (epoch int8,
// base int8, current bool as in FenceRead, last int8: the sequence's latest
// draw, or NULL if it has not drawn yet).
func FenceStatus(table string) string {
	seq := FenceSeq(table)
	return "SELECT c.epoch, c.base, c.boot IS NOT DISTINCT FROM " + FenceLifetime + ", (SELECT CASE WHEN q.is_called THEN q.last_value END FROM " + seq + " AS q) FROM " + table + " AS c"
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
