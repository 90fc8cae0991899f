package advisory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
)

// DefaultFenceTable is the fencing counter table that WithFencing("") uses.
const DefaultFenceTable = sqltext.DefaultFenceTable

// ErrNoFenceTable means fencing is on but its counter table does not exist.
var ErrNoFenceTable = errors.New("advisory: the fencing table does not exist: create it once with advisory.CreateFenceTable(ctx, db, table), the SQL of advisory.FenceTableSQL(table), or pglock")

// ErrBadFenceTable means the table name given to WithFencing is not a plain
// (optionally schema-qualified) identifier.
var ErrBadFenceTable = errors.New("advisory: bad fencing table name: want letters, digits and underscores, optionally schema.table")

// quoteTable validates and quotes a table name; "" is DefaultFenceTable.
func quoteTable(name string) (string, error) {
	q, ok := sqltext.QuoteFenceTable(name)
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrBadFenceTable, name)
	}
	return q, nil
}

// WithFencing makes every acquisition return fencing tokens (Lease.Token,
// Lease.Tokens): per key, a number greater than every token issued for that
// key before, across all holders, processes and server restarts, taken from
// the counter table (DefaultFenceTable for "") in the same statement as the
// acquire, so it costs no extra round trip. Hand the token to stores outside
// this database and have them reject writes with a token lower than the
// highest they have seen: a holder that lost its lock without noticing then
// cannot get a stale write through.
//
// Shared holders of a key at the same time get distinct tokens; each is
// greater than the tokens of every earlier holder in either mode, and an
// exclusive holder's token is greater than those of all shared holders
// before it. A try that is refused takes no token.
//
// The table must exist (CreateFenceTable); otherwise acquisitions fail with
// ErrNoFenceTable. A bad name makes them fail with ErrBadFenceTable.
func WithFencing(table string) Option {
	return func(o *options) {
		o.fencing = true
		o.fenceTable, o.fenceErr = quoteTable(table)
	}
}

// FenceTableSQL returns the CREATE TABLE IF NOT EXISTS statement of the
// fencing counter table ("" for DefaultFenceTable), for migrations.
func FenceTableSQL(table string) (string, error) {
	q, err := quoteTable(table)
	if err != nil {
		return "", err
	}
	return sqltext.FenceTable(q), nil
}

// CreateFenceTable creates the fencing counter table ("" for
// DefaultFenceTable) if it does not exist.
func CreateFenceTable(ctx context.Context, db *sql.DB, table string) error {
	if db == nil {
		return ErrNilDB
	}
	q, err := FenceTableSQL(table)
	if err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, q); err != nil {
		return fmt.Errorf("advisory: creating the fencing table: %w", err)
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

// fenceError maps a missing table to ErrNoFenceTable.
func fenceError(err error) error {
	if pgerr.SQLState(err) == pgerr.UndefinedTable {
		return fmt.Errorf("%w (%w)", ErrNoFenceTable, err)
	}
	return err
}

// parseTokens reads the comma-separated tokens of LockAllFenced.
func parseTokens(s string, n int) ([]int64, error) {
	parts := strings.Split(s, ",")
	if len(parts) != n {
		return nil, fmt.Errorf("advisory: server returned %d fencing tokens for %d keys", len(parts), n)
	}
	out := make([]int64, n)
	for i, p := range parts {
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("advisory: bad fencing token %q: %w", p, err)
		}
		out[i] = v
	}
	return out, nil
}
