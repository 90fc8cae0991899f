package sqltext

import (
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// UnlockMany is the session-level release of every key of keys in one round
// trip (Unlock costs one round trip per key, which for a LockAll lease of
// thousands of keys outlasts any sensible release timeout). It returns one
// row: (released int8), how many of keys the session held in that mode and
// has now released; every held key is released even when some were not
// held, so a result below len(keys) means the lease had lost some of them.
// (Unlike Unlock it is a query: a statement that answered with a row per
// released key for Exec to count would send thousands of rows.)
// The keys travel as in LockAll: a bigint array, pairs packed as
// a<<32 | uint32(b), and a flag array that marks the pairs. The OFFSET 0
// fence makes the server convert the arrays once: without it a parameter's
// cast is pulled up into every row and re-parsed per key (quadratic: with
// 10,000 keys as parameters, minutes instead of milliseconds).
func UnlockMany(s Style, shared bool, keys []keyspace.Key) (string, []any) {
	b := &builder{style: s}
	v, p := b.keyArrays(keys)
	name := "pg_advisory_unlock"
	if shared {
		name += "_shared"
	}
	return "SELECT count(*) FILTER (WHERE CASE WHEN k.p[i] THEN " +
		name + "((k.v[i] >> 32)::int4, ((k.v[i] << 32) >> 32)::int4) ELSE " + name + "(k.v[i]) END) " +
		"FROM (SELECT " + v + " AS v, " + p + " AS p OFFSET 0) k, generate_subscripts(k.v, 1) AS i", b.args
}
