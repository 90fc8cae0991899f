package txlock

import (
	"context"
	"database/sql"
	"errors"

	"github.com/pgadvisory/pgadvisory/internal/fencing"
	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// DefaultFenceTable is the fencing table that a table name of "" means;
// the same table as advisory.DefaultFenceTable.
const DefaultFenceTable = sqltext.DefaultFenceTable

var (
	// ErrNoFenceTable means the fencing table or its sequence does not
	// exist. It is advisory.ErrNoFenceTable.
	ErrNoFenceTable = pgerr.ErrNoFenceTable

	// ErrBadFenceTable means the table name is not a plain (optionally
	// schema-qualified) identifier. It is advisory.ErrBadFenceTable.
	ErrBadFenceTable = pgerr.ErrBadFenceTable

	// ErrNoFenceEpoch means the fencing table has no row, whose epoch every
	// token needs: create the table again (advisory.CreateFenceTable or
	// pglock fence init) to add it. It is advisory.ErrNoFenceEpoch.
	ErrNoFenceEpoch = pgerr.ErrNoFenceEpoch

	// ErrFenceLayout means a table of the fencing table's name has another
	// layout. It is advisory.ErrFenceLayout.
	ErrFenceLayout = pgerr.ErrFenceLayout

	// ErrFenceOldLayout means the fencing table has the per-key layout of
	// earlier versions: migrate it (advisory.MigrateFenceTable, or the SQL
	// of advisory.FenceMigrateSQL). It is advisory.ErrFenceOldLayout.
	ErrFenceOldLayout = pgerr.ErrFenceOldLayout

	// ErrNilDB means LockToken or NextToken got a nil *sql.DB.
	ErrNilDB = errors.New("txlock: nil *sql.DB for the fencing token")
)

// LockToken takes key for the rest of the transaction tx, as Lock does (the
// options of Lock apply: WithShared, WithTry, WithLockTimeout, WithDriver),
// then returns a fencing token for key from the sequence of the fencing
// table ("" for DefaultFenceTable), the table that advisory.WithFencing
// uses. Hand the token to stores outside this database and have them reject
// writes with a token lower than the highest they have seen.
//
// The guarantee: a token returned by LockToken or NextToken, or by an
// advisory Lease of the same key and table, is greater than every token
// returned for that key before the holder that gets it acquired the lock,
// whether the earlier holders committed, rolled back, were terminated, or the
// server restarted or crashed since. Tokens never repeat. A token is
// epoch<<40 | counter, as advisory's (see advisory.WithFencing): only the
// order means something.
//
// The token is drawn in tx, after the lock is held, with nextval, which no
// rollback undoes: a token once returned is never handed out again. The
// draw leaves tx's commit as it is. Connections: the draw needs no second
// connection once the backend session of tx knows the epoch (it keeps it in
// a session setting). A second connection of db is taken for a moment, while
// the lock is held in tx, when it does not: the first LockToken on each
// backend session of the pool, the first after a server restart or when the
// epoch's window of 2^40 draws is used up, and every LockToken in a
// read-only transaction (which cannot call nextval). So size db's pool with
// one connection more than the transactions that may call LockToken at
// once, or bound ctx; a pool that keeps its connections (SetMaxIdleConns at
// least the transactions at once) takes the second connection almost never.
//
// With WithTry, a key held elsewhere returns ErrNotAcquired and takes no
// token. If the lock is taken but the token fails (ErrNoFenceTable, a
// cancelled ctx), the lock stays held until tx ends, and tx may be in error:
// roll it back. Shared holders at the same time get distinct tokens.
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
	t, err := drawTx(ctx, db, tx, q)
	if err != nil {
		return 0, fail(ctx, "fencing token of "+key.String(), err)
	}
	return t, nil
}

// NextToken returns a fencing token from the sequence of the fencing table
// ("" for DefaultFenceTable), drawn on a connection of db, for a caller that
// already holds key in a transaction (in Do's function, say). It makes the
// promise of LockToken only if the caller holds key while it runs. It takes
// one connection of db for its duration.
func NextToken(ctx context.Context, db *sql.DB, key keyspace.Key, table string) (int64, error) {
	if db == nil {
		return 0, ErrNilDB
	}
	q, ok := sqltext.QuoteFenceTable(table)
	if !ok {
		return 0, errorf("txlock: %w: %q", ErrBadFenceTable, table)
	}
	t, err := next(ctx, db, q)
	if err != nil {
		return 0, fail(ctx, "fencing token of "+key.String(), err)
	}
	return t, nil
}

// next draws a token on a connection of db.
func next(ctx context.Context, db *sql.DB, table string) (int64, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return fencing.Next(ctx, conn, table)
}

// drawTx draws a token in tx; a draw that the session of tx cannot turn
// into a token on its own (it does not know the epoch yet, or the draw left
// the epoch's window) is resolved on a connection of db, which may have to
// bump the epoch in a transaction of its own, and tx's session learns the
// epoch.
func drawTx(ctx context.Context, db *sql.DB, tx Querier, table string) (int64, error) {
	var s, token sql.NullInt64
	if err := tx.QueryRowContext(ctx, sqltext.FenceDrawTx(table)).Scan(&s, &token); err != nil {
		// tx is in error: ask db what the table is.
		return 0, fencing.Diagnose(ctx, db, table, err)
	}
	if token.Valid {
		return token.Int64, nil
	}
	if !s.Valid {
		// A read-only transaction: draw on db.
		return next(ctx, db, table)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	t, cache, err := fencing.Resolve(ctx, conn, table, s.Int64)
	if err != nil {
		return 0, err
	}
	if _, err := fencing.SetCache(ctx, tx, table, cache); err != nil {
		return 0, err
	}
	_, err = fencing.SetCache(ctx, conn, table, cache)
	return t, err
}
