package advisory

import (
	"context"
	"database/sql"
	"strconv"
	"strings"

	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
)

// DefaultFenceTable is the fencing counter table that WithFencing("") uses.
const DefaultFenceTable = sqltext.DefaultFenceTable

// ErrNoFenceTable means fencing is on but its counter table does not exist.
// errors.Is matches it against txlock.ErrNoFenceTable too.
var ErrNoFenceTable = pgerr.ErrNoFenceTable

// ErrNoFenceEpoch means the fencing table has no epoch row, which every
// token needs: run CreateFenceTable again. errors.Is matches it against
// txlock.ErrNoFenceEpoch too.
var ErrNoFenceEpoch = pgerr.ErrNoFenceEpoch

// ErrFenceLayout means a table of the fencing table's name exists with
// another layout (an unreleased earlier one, or a table of the
// application's): drop it or pick another name. errors.Is matches it against
// txlock.ErrFenceLayout too.
var ErrFenceLayout = pgerr.ErrFenceLayout

// ErrBadFenceTable means the table name given to WithFencing is not a plain
// (optionally schema-qualified) identifier. errors.Is matches it against
// txlock.ErrBadFenceTable too.
var ErrBadFenceTable = pgerr.ErrBadFenceTable

// quoteTable validates and quotes a table name; "" is DefaultFenceTable.
func quoteTable(name string) (string, error) {
	q, ok := sqltext.QuoteFenceTable(name)
	if !ok {
		return "", errorf("advisory: %w: %q", ErrBadFenceTable, name)
	}
	return q, nil
}

// WithFencing makes every acquisition return fencing tokens (Lease.Token,
// Lease.Tokens): per key, a number greater than every token issued for that
// key before, across all holders, processes and server restarts and crashes,
// taken from the counter table (DefaultFenceTable for "") in the same
// statement as the acquire, so it costs no extra round trip. Hand the token
// to stores outside this database and have them reject writes with a token
// lower than the highest they have seen: a holder that lost its lock without
// noticing then cannot get a stale write through.
//
// Only the order of tokens means something. A token is epoch<<40 | counter:
// the counter counts acquisitions of the key, and the epoch (one row of the
// table) goes up once per server lifetime, at the first acquisition after a
// restart, a crash or a failover. The counter commits asynchronously (no WAL
// flush per lock), so a crash can lose its latest bumps; but the epoch bump
// commits durably before any token of the new epoch is returned, so every
// token after a crash is above every token before it. Limits: 2^40
// acquisitions of one key per server lifetime; across a failover, tokens are
// as safe as the replication of the epoch bump (synchronous replication
// makes them strictly increasing; with asynchronous replication a lost epoch
// bump could repeat tokens); the server must run with fsync on.
//
// Shared holders of a key at the same time each get a token of their own,
// distinct from one another; each is greater than the tokens of every
// earlier holder in either mode, and an exclusive holder's token is greater
// than those of all shared holders before it. A try that is refused takes no
// token.
//
// The table must exist (CreateFenceTable); otherwise acquisitions fail with
// ErrNoFenceTable (ErrNoFenceEpoch without its epoch row, ErrFenceLayout for
// a table of another layout). A bad name makes them fail with
// ErrBadFenceTable.
func WithFencing(table string) Option {
	return func(o *options) {
		o.fencing = true
		o.fenceTable, o.fenceErr = quoteTable(table)
	}
}

// FenceTableSQL returns the statements that create the fencing table (""
// for DefaultFenceTable), for migrations: CREATE TABLE IF NOT EXISTS, then
// the insert of its epoch row if missing, separated by ";\n". The layout:
//
//	kind  int2  0 = the epoch row, 1 = a bigint key, 2 = a pair key (as pg_locks.objsubid)
//	key   int8  the bigint key, or a pair (a, b) packed as a<<32 | uint32(b); 0 for the epoch row
//	token int8  the key's latest token; the epoch in the epoch row
//	boot  text  epoch row only: the server lifetime that set the epoch
//	PRIMARY KEY (kind, key)
func FenceTableSQL(table string) (string, error) {
	q, err := quoteTable(table)
	if err != nil {
		return "", err
	}
	return strings.Join(sqltext.FenceTable(q), ";\n"), nil
}

// CreateFenceTable creates the fencing counter table ("" for
// DefaultFenceTable) if it does not exist, and its epoch row if that is
// missing; running it again is harmless. On a table of the same name with
// another layout it fails with ErrFenceLayout.
func CreateFenceTable(ctx context.Context, db *sql.DB, table string) error {
	if db == nil {
		return ErrNilDB
	}
	q, err := quoteTable(table)
	if err != nil {
		return err
	}
	for _, stmt := range sqltext.FenceTable(q) {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return errorf("advisory: creating the fencing table: %w", pgerr.FenceError(err))
		}
	}
	return nil
}

// Token returns the fencing token of the lease's key (the first key of a
// LockAll lease), or 0 if the Locker has no WithFencing.
func (ls *Lease) Token() int64 {
	if len(ls.tokens) == 0 {
		return 0
	}
	return ls.tokens[0]
}

// Tokens returns the fencing token of every key, in the order of Keys, or
// nil if the Locker has no WithFencing.
func (ls *Lease) Tokens() []int64 {
	if ls.tokens == nil {
		return nil
	}
	return append([]int64(nil), ls.tokens...)
}

// fenceError maps a missing table to ErrNoFenceTable and a table of another
// layout to ErrFenceLayout.
func fenceError(err error) error {
	if pgerr.SQLState(err) == pgerr.UndefinedTable {
		return errorf("advisory: %w (%w)", ErrNoFenceTable, err)
	}
	return pgerr.FenceError(err)
}

// parseTokens reads the comma-separated tokens of LockAllFenced.
func parseTokens(s string, n int) ([]int64, error) {
	parts := strings.Split(s, ",")
	if len(parts) != n {
		return nil, errorf("advisory: server returned %d fencing tokens for %d keys", len(parts), n)
	}
	out := make([]int64, n)
	for i, p := range parts {
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return nil, errorf("advisory: bad fencing token %q: %w", p, err)
		}
		out[i] = v
	}
	return out, nil
}
