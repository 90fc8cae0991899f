package sqltext

import (
	"strconv"
	"strings"
	"sync"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// OpKind is what one operation of a Batch does to its key.
type OpKind uint8

const (
	// OpTryLock is pg_try_advisory_lock (OpTryLockShared: _shared): true if the
	// session now holds the key, false if another session holds it.
	OpTryLock OpKind = iota
	OpTryLockShared
	// OpUnlock is pg_advisory_unlock (OpUnlockShared: _shared): true if the
	// session held the key in that mode and gave one hold of it back.
	OpUnlock
	OpUnlockShared
)

// Op is one operation of a Batch.
type Op struct {
	Kind OpKind
	Key  keyspace.Key
}

// batchFns lists the functions of the operation codes of Batch: the code is
// kind*2, plus one for a pair key.
var batchFns = [...]string{
	"pg_try_advisory_lock", "pg_try_advisory_lock_shared",
	"pg_advisory_unlock", "pg_advisory_unlock_shared",
}

// batchText is the text of Batch in the Params style; the Inline style
// writes the two arrays over its placeholders.
var batchText = "SELECT pg_backend_pid(), string_agg(CASE WHEN x.r THEN '1' ELSE '0' END, '' ORDER BY x.i) " +
	"FROM (SELECT o.i, " + caseText + " AS r FROM " + batchOps + ") AS x"

// caseText is the CASE expression of the batch statements: the answer of
// the operation of code o.c on key value o.v.
var caseText = buildCase()

func buildCase() string {
	var b strings.Builder
	b.WriteString("CASE o.c")
	for k, name := range batchFns {
		b.WriteString(" WHEN " + strconv.Itoa(2*k) + " THEN " + name + "(o.v)")
		b.WriteString(" WHEN " + strconv.Itoa(2*k+1) + " THEN " + name + "((o.v >> 32)::int4, ((o.v << 32) >> 32)::int4)")
	}
	b.WriteString(" END")
	return b.String()
}

// batchOps is the FROM list of the batch statements: one row (c, v, i) per
// operation, its code, key value and place, from the two arrays converted
// once (OFFSET 0), not per row.
const batchOps = "(SELECT $1::int2[] AS c, $2::int8[] AS v OFFSET 0) AS a, unnest(a.c, a.v) WITH ORDINALITY AS o(c, v, i)"

// BatchFenced is Batch with a fencing draw for every try that took its key,
// in the same statement: nextval of the sequence of table (a quoted
// identifier, see QuoteFenceTable) right after that try's grant, in a
// transaction that commits asynchronously, as LockFenced does. It returns
// one row: (backend pid int4, results text, draws text, cache text):
// results as Batch's; draws has one comma-separated field per operation, the
// draw of a granted try and empty for any other; cache is the session's
// cache of the epoch (FenceSetting: "offset,limit", or NULL), with which the
// caller turns each draw s below limit into the token s + offset and
// resolves the others (internal/fencing).
func BatchFenced(s Style, ops []Op, table string) (string, []any) {
	return withArrays(s, batchFencedText(table), ops)
}

// batchFencedText returns the text of BatchFenced for table, in the Params
// style: built once per table.
func batchFencedText(table string) string {
	if v, ok := batchFencedTexts.Load(table); ok {
		return v.(string)
	}
	q := "WITH o AS MATERIALIZED (SELECT o.i, o.c, " + caseText + " AS r FROM " + batchOps + "), " +
		"n AS MATERIALIZED (SELECT o.i, " + nextval(table) + " AS s FROM o WHERE o.r AND o.c < " + strconv.Itoa(2*int(OpUnlock)) +
		" AND " + asyncCommit + ") " +
		"SELECT pg_backend_pid(), string_agg(CASE WHEN o.r THEN '1' ELSE '0' END, '' ORDER BY o.i), " +
		"string_agg(coalesce(n.s::text, ''), ',' ORDER BY o.i), " + fenceCache(table) + " FROM o LEFT JOIN n ON n.i = o.i"
	batchFencedTexts.Store(table, q)
	return q
}

var batchFencedTexts sync.Map // quoted table -> text of BatchFenced

// Batch runs ops on one session in one round trip, in the order given, and
// returns one row: (backend pid int4, results text), with one character per
// operation in order, '1' for true and '0' for false (see OpKind). The
// operations of many leases of one session go together this way; with one
// operation, the single-key statements (LockExec, Unlock) cost the server
// less.
func Batch(s Style, ops []Op) (string, []any) {
	return withArrays(s, batchText, ops)
}

// withArrays returns text (a batch statement in the Params style) with the
// arrays of ops, the operation codes ($1) and the key values ($2): as
// arguments (Params), or written over the placeholders (Inline).
func withArrays(s Style, text string, ops []Op) (string, []any) {
	var codes, vals strings.Builder
	codes.WriteByte('{')
	vals.WriteByte('{')
	for i, op := range ops {
		if i > 0 {
			codes.WriteByte(',')
			vals.WriteByte(',')
		}
		code := 2 * int(op.Kind)
		if x, y, ok := op.Key.Pair(); ok {
			code++
			vals.WriteString(strconv.FormatInt(int64(x)<<32|int64(uint32(y)), 10))
		} else {
			n, _ := op.Key.Int64()
			vals.WriteString(strconv.FormatInt(n, 10))
		}
		codes.WriteString(strconv.Itoa(code))
	}
	codes.WriteByte('}')
	vals.WriteByte('}')
	if s == Inline {
		q := strings.ReplaceAll(text, "$1", "'"+codes.String()+"'")
		return strings.ReplaceAll(q, "$2", "'"+vals.String()+"'"), nil
	}
	return text, []any{codes.String(), vals.String()}
}
