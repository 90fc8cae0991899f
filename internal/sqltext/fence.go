package sqltext

import (
	"regexp"
	"strings"

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

// FenceNext bumps the fencing counter of k in table (a quoted identifier) in
// a statement of its own, the same upsert that LockFenced runs, and returns
// one row: (token int8). txlock sends it outside the caller's transaction,
// in autocommit, so that a token once returned is never rolled back.
func FenceNext(s Style, k keyspace.Key, table string) (string, []any) {
	b := &builder{style: s}
	v, p := b.packed(k)
	return "INSERT INTO " + table + " AS c (key, pair, token) VALUES (" + v + ", " + p + ", 1)" +
		" ON CONFLICT (key, pair) DO UPDATE SET token = c.token + 1 RETURNING c.token", b.args
}

// FenceCurrent reads the latest fencing token of k in table (a quoted
// identifier): one row (token int8), or no row if k never had one.
func FenceCurrent(s Style, k keyspace.Key, table string) (string, []any) {
	b := &builder{style: s}
	v, p := b.packed(k)
	return "SELECT token FROM " + table + " WHERE key = " + v + " AND pair = " + p, b.args
}
