package txlock

import (
	"context"
	"database/sql"
	"errors"

	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// DefaultFenceTable is the fencing counter table that a table name of ""
// means; the same table as advisory.DefaultFenceTable.
const DefaultFenceTable = sqltext.DefaultFenceTable

var (
	// ErrNoFenceTable means the fencing counter table does not exist. It is
	// advisory.ErrNoFenceTable.
	ErrNoFenceTable = pgerr.ErrNoFenceTable

	// ErrBadFenceTable means the table name is not a plain (optionally
	// schema-qualified) identifier. It is advisory.ErrBadFenceTable.
	ErrBadFenceTable = pgerr.ErrBadFenceTable

	// ErrNoFenceEpoch means the fencing table has no epoch row, which every
	// token needs: create the table again (advisory.CreateFenceTable or
	// pglock fence init) to add it. It is advisory.ErrNoFenceEpoch.
	ErrNoFenceEpoch = pgerr.ErrNoFenceEpoch

	// ErrFenceLayout means a table of the fencing table's name has another
	// layout. It is advisory.ErrFenceLayout.
	ErrFenceLayout = pgerr.ErrFenceLayout

	// ErrNilDB means LockToken or NextToken got a nil *sql.DB.
	ErrNilDB = errors.New("txlock: nil *sql.DB for the fencing token")
)

// LockToken takes key for the rest of the transaction tx, as Lock does (the
// options of Lock apply: WithShared, WithTry, WithLockTimeout, WithDriver),
// then returns a fencing token for key from the counter table ("" for
// DefaultFenceTable), the table that advisory.WithFencing uses. Hand the
// token to stores outside this database and have them reject writes with a
// token lower than the highest they have seen.
//
// The guarantee: a token returned by LockToken or NextToken, or by an
// advisory Lease of the same key and table, is greater than every token
// returned for that key before the holder that gets it acquired the lock,
// whether the earlier holders committed, rolled back, were terminated, or the
// server restarted or crashed since. Tokens never repeat per key. A token is
// epoch<<40 | counter, as advisory's (see advisory.WithFencing): only the
// order means something.
//
// To keep that promise the counter is not bumped inside tx: a bump there
// would be undone by a rollback (or a terminated backend), and the next
// holder would get the very token that the cut-off holder may already have
// written with. The bump runs on db instead, in a statement of its own that
// commits before the token is returned, after the lock is held in tx. It
// costs a second round trip and a second connection of db for its duration:
// when many transactions of db's pool call LockToken at once, give the pool
// more connections (SetMaxOpenConns) than there are such transactions, and
// bound ctx. That commit is asynchronous (no WAL flush), as advisory's: a
// crash can undo the latest bumps, but the epoch that the first token after
// the crash bumps durably keeps every later token above them.
//
// With WithTry, a key held elsewhere returns ErrNotAcquired and takes no
// token. If the lock is taken but the bump fails (ErrNoFenceTable, a
// cancelled ctx), the lock stays held until tx ends; roll tx back. Shared
// holders at the same time get distinct tokens.
func LockToken(ctx context.Context, db *sql.DB, tx Querier, key keyspace.Key, table string, opts ...Option) (int64, error) {
	if db == nil {
		return 0, ErrNilDB
	}
	q, ok := sqltext.QuoteFenceTable(table)
	if !ok {
		return 0, errorf("txlock: %w: %q", ErrBadFenceTable, table)
	}
	o := collect(opts)
	if err := lockOne(ctx, tx, o.style(tx), key, o); err != nil {
		return 0, err
	}
	return next(ctx, db, key, q)
}

// NextToken returns a fencing token for key from the counter table ("" for
// DefaultFenceTable), bumped on db in a statement of its own, for a caller
// that already holds key in a transaction (in Do's function, say). It makes
// the promise of LockToken only if the caller holds key while it runs.
func NextToken(ctx context.Context, db *sql.DB, key keyspace.Key, table string) (int64, error) {
	if db == nil {
		return 0, ErrNilDB
	}
	q, ok := sqltext.QuoteFenceTable(table)
	if !ok {
		return 0, errorf("txlock: %w: %q", ErrBadFenceTable, table)
	}
	return next(ctx, db, key, q)
}

func next(ctx context.Context, db *sql.DB, key keyspace.Key, table string) (int64, error) {
	q, args := sqltext.FenceNext(sqltext.StyleOf(db.Driver()), key, table)
	var token sql.NullInt64
	if err := db.QueryRowContext(ctx, q, args...).Scan(&token); err != nil {
		if pgerr.SQLState(err) == pgerr.UndefinedTable {
			return 0, errorf("txlock: %w (%w)", ErrNoFenceTable, err)
		}
		return 0, fail(ctx, "fencing token of "+key.String(), pgerr.FenceError(err))
	}
	if !token.Valid {
		return 0, errorf("txlock: fencing token of %v: %w", key, ErrNoFenceEpoch)
	}
	return token.Int64, nil
}
