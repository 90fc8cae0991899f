package advisory

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/fencing"
	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// DefaultFenceTable is the fencing table that WithFencing("") uses; its
// sequence is pgadvisory_fence_seq.
const DefaultFenceTable = sqltext.DefaultFenceTable

// ErrNoFenceTable means fencing is on but its table, or the table's
// sequence, does not exist.
// errors.Is matches it against txlock.ErrNoFenceTable too.
var ErrNoFenceTable = pgerr.ErrNoFenceTable

// ErrNoFenceEpoch means the fencing table has no row, whose epoch every
// token needs: run CreateFenceTable again. errors.Is matches it against
// txlock.ErrNoFenceEpoch too.
var ErrNoFenceEpoch = pgerr.ErrNoFenceEpoch

// ErrFenceLayout means a table of the fencing table's name exists with
// another layout, neither the current one nor the per-key one of earlier
// versions (an application's table, say): pick another name or drop it.
// errors.Is matches it against txlock.ErrFenceLayout too.
var ErrFenceLayout = pgerr.ErrFenceLayout

// ErrFenceOldLayout means the fencing table has the per-key layout of
// earlier versions (kind, key, token, boot): migrate it once with the SQL of
// FenceMigrateSQL (or MigrateFenceTable, or pglock fence migrate), which
// keeps every later token above the old ones. errors.Is matches it against
// txlock.ErrFenceOldLayout too.
var ErrFenceOldLayout = pgerr.ErrFenceOldLayout

// ErrFenceExhausted means the fencing table's epoch reached 2^23 - 1, the
// last that fits in a token: see WithFencing for how far away that is.
var ErrFenceExhausted = pgerr.ErrFenceExhausted

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

// WithFencing makes every acquisition return a fencing token (Lease.Token,
// Lease.Tokens): a number greater than every token issued before for the
// same key, across all holders, processes and server restarts and crashes,
// and than the tokens of txlock.LockToken on the same table. Hand the token
// to stores outside this database and have them reject writes with a token
// lower than the highest they have seen: a holder that lost its lock
// without noticing then cannot get a stale write through.
//
// Tokens come from one sequence, table's sequence (table: DefaultFenceTable
// for ""; the sequence is the table's name plus "_seq"), drawn with nextval
// in the acquire statement, so a token costs no extra round trip and no row
// write. One counter for all keys is strictly increasing per key too: the
// next holder of a key draws after the previous one did. All keys of one
// acquisition (LockAll) get the same token; tokens of different keys are
// not consecutive.
//
// Only the order of tokens means something. A token is epoch<<40 | counter.
// The epoch lives in the table's one row and goes up at the first token
// after a restart, a crash or a failover (a new server lifetime), durably,
// before any token of it is returned; the draws commit asynchronously (no
// WAL flush per lock), so a crash can lose the latest ones, but every token
// after the crash is of a higher epoch. A backend session reads the epoch
// once and keeps it in a session setting (pgadvisory.fence_ and 16 hex
// digits), so the acquire statement does not read the table.
//
// Bounds: the counter part of a token rolls over into the next epoch after
// 2^40 draws; there are 2^23 epochs, one used per server lifetime and one
// per 2^40 draws, so tokens last for 2^63 draws: at 1,000,000 acquisitions
// a second, 290,000 years, less 12.7 days of that rate per server lifetime
// (8.4 million lifetimes would use them all). Across a failover, tokens are
// as safe as the replication of the epoch's bump (synchronous replication
// keeps them increasing); the server must run with fsync on.
//
// Shared holders of a key at the same time get distinct tokens, each
// greater than the tokens of every earlier holder in either mode. A try
// that is refused takes no token.
//
// The table must exist (CreateFenceTable); otherwise acquisitions fail with
// ErrNoFenceTable (ErrNoFenceEpoch without its row, ErrFenceOldLayout for a
// table of the earlier per-key layout, ErrFenceLayout for any other). A bad
// name makes them fail with ErrBadFenceTable: a table name has at most 59
// bytes, so that its sequence's name fits PostgreSQL's 63. Fenced Lockers
// multiplex as others do: the tries that meet on a multiplexed session go
// as one statement that draws a token for each one granted
// (sqltext.BatchFenced), and a fenced batch that waits on the server (for
// the fencing table, while a session resolves a draw) is bounded by the
// keepalive's bound, past which its session counts as lost.
func WithFencing(table string) Option {
	return func(o *options) {
		o.fencing = true
		o.fenceTable, o.fenceErr = quoteTable(table)
	}
}

// FenceTableSQL returns the statements that create the fencing table (""
// for DefaultFenceTable), for migrations, separated by ";\n": CREATE TABLE
// IF NOT EXISTS, CREATE SEQUENCE IF NOT EXISTS, then the insert of its one
// row if missing. The layout:
//
//	one   bool  PRIMARY KEY, always true: the table has one row
//	epoch int8  the epoch: the high bits of every token
//	base  int8  the draw of the sequence below the epoch's window of draws
//	boot  text  the server lifetime that set the epoch
//
// and the sequence table_seq, from which every token is drawn.
func FenceTableSQL(table string) (string, error) {
	q, err := quoteTable(table)
	if err != nil {
		return "", err
	}
	return strings.Join(sqltext.FenceTable(q), ";\n"), nil
}

// FenceMigrateSQL returns the statements, separated by ";\n", that turn a
// fencing table of the per-key layout of earlier versions (kind, key,
// token, boot) into the current layout in one transaction: the new epoch
// starts above the highest token the old table records, so that every later
// token is above every token handed out before. Run it once, where the
// earlier version's acquisitions have stopped (it locks the table).
func FenceMigrateSQL(table string) (string, error) {
	q, err := quoteTable(table)
	if err != nil {
		return "", err
	}
	return strings.Join(sqltext.FenceMigrate(q), ";\n"), nil
}

// CreateFenceTable creates the fencing table ("" for DefaultFenceTable), its
// sequence and its row, each if missing; running it again is harmless. On
// a table of the earlier per-key layout it fails with ErrFenceOldLayout and
// changes nothing (MigrateFenceTable migrates it); on a table of another
// layout, with ErrFenceLayout.
func CreateFenceTable(ctx context.Context, db *sql.DB, table string) error {
	q, layout, err := fenceLayout(ctx, db, table)
	if err != nil {
		return err
	}
	return createFenceTable(ctx, db, q, layout)
}

// fenceLayout quotes table ("" for DefaultFenceTable) and reads the layout
// of the table it names.
func fenceLayout(ctx context.Context, db *sql.DB, table string) (string, fencing.Layout, error) {
	if db == nil {
		return "", fencing.Other, ErrNilDB
	}
	q, err := quoteTable(table)
	if err != nil {
		return "", fencing.Other, err
	}
	layout, err := fencing.Check(ctx, db, q)
	if err != nil {
		return "", fencing.Other, errorf("advisory: reading the fencing table's layout: %w", err)
	}
	return q, layout, nil
}

// createFenceTable is CreateFenceTable for the quoted table q, whose layout
// was just read.
func createFenceTable(ctx context.Context, db *sql.DB, q string, layout fencing.Layout) error {
	switch layout {
	case fencing.Old:
		return errorf("advisory: fencing table %s: %w", q, ErrFenceOldLayout)
	case fencing.Other:
		return errorf("advisory: fencing table %s: %w", q, ErrFenceLayout)
	}
	for _, stmt := range sqltext.FenceTable(q) {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return errorf("advisory: creating the fencing table: %w", pgerr.FenceError(err))
		}
	}
	return nil
}

// MigrateFenceTable migrates a fencing table of the per-key layout of
// earlier versions ("" for DefaultFenceTable) as FenceMigrateSQL says, on
// one connection of db. A table of the current layout is left as it is (it
// still gets a missing sequence or row, as CreateFenceTable does); a missing
// table is created.
func MigrateFenceTable(ctx context.Context, db *sql.DB, table string) error {
	q, layout, err := fenceLayout(ctx, db, table)
	if err != nil {
		return err
	}
	if layout != fencing.Old {
		return createFenceTable(ctx, db, q, layout)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return errorf("advisory: migrating the fencing table: %w", err)
	}
	defer conn.Close()
	for _, stmt := range sqltext.FenceMigrate(q) {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			_, _ = conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
			return errorf("advisory: migrating the fencing table: %w", err)
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
// nil if the Locker has no WithFencing. The keys of one acquisition share
// one token.
func (ls *Lease) Tokens() []int64 {
	if ls.tokens == nil {
		return nil
	}
	return append([]int64(nil), ls.tokens...)
}

// queryFenced runs the fenced acquire statement of keys on conn and
// returns how many of keys (a prefix) the session now holds, its backend
// pid, and once all are held their token (the same for every key; 0 until
// then). A draw that the session's cache of the epoch does not cover is
// resolved on conn (internal/fencing): once per backend session, and once
// per 2^40 draws. bound, when positive, bounds that resolution and the
// diagnosis of a failure (both may wait on the server, where the acquire
// statement itself never waits past timeout): a multiplexed session sends
// the statement with a context that cannot be cancelled, which the drivers
// and database/sql run without a watching goroutine, and pays for a
// deadline only when it needs one. stmt is as in fencedRow.
func (l *Locker) queryFenced(ctx context.Context, conn *sql.Conn, stmt **sql.Stmt, m sqltext.Mode, keys []keyspace.Key, timeout, bound time.Duration) (int, int, int64, error) {
	var q string
	var args []any
	if len(keys) == 1 {
		q, args = sqltext.LockFenced(sqltext.Params, m, keys[0], timeout, l.opts.fenceTable)
	} else {
		q, args = sqltext.LockAllFenced(sqltext.Params, m, keys, timeout, l.opts.fenceTable)
	}
	// One allocation for what the row is scanned into.
	var row struct {
		n           int64
		ok          bool
		pid         int
		draw, token sql.NullInt64
	}
	var err error
	if len(keys) == 1 {
		err = l.fencedRow(ctx, conn, stmt, q, args, &row.ok, &row.pid, &row.draw, &row.token)
		if row.ok {
			row.n = 1
		}
	} else {
		err = l.fencedRow(ctx, conn, stmt, q, args, &row.n, &row.pid, &row.draw, &row.token)
	}
	n, pid := row.n, row.pid
	if err != nil {
		ctx, cancel := bounded(ctx, bound)
		defer cancel()
		return 0, 0, 0, fencing.Diagnose(ctx, conn, l.opts.fenceTable, err)
	}
	switch {
	case n < 0 || n > int64(len(keys)):
		return 0, pid, 0, errorf("advisory: server reported %d keys taken of %d", n, len(keys))
	case n < int64(len(keys)):
		return int(n), pid, 0, nil
	case !row.draw.Valid:
		return int(n), pid, 0, errorf("advisory: lock %v: no fencing draw from the server", keyArg(keys))
	}
	t := row.token.Int64
	if !row.token.Valid {
		ctx, cancel := bounded(ctx, bound)
		defer cancel()
		if t, _, err = l.resolveDraw(ctx, conn, pid, row.draw.Int64); err != nil {
			return int(n), pid, 0, errorf("advisory: lock %v: fencing token: %w", keyArg(keys), err)
		}
	}
	return int(n), pid, t, nil
}

// bounded is ctx with a deadline d from now, or ctx itself for d <= 0.
func bounded(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// resolveDraw turns draw, taken by backend pid on conn, into a token
// (internal/fencing's Resolve) and stores the epoch in the session's cache
// for the next draws; it returns the token and the cache's new value.
func (l *Locker) resolveDraw(ctx context.Context, conn *sql.Conn, pid int, draw int64) (int64, string, error) {
	t, cache, err := fencing.Resolve(ctx, conn, l.opts.fenceTable, draw)
	if err != nil {
		return 0, "", err
	}
	at, err := fencing.SetCache(ctx, conn, l.opts.fenceTable, cache)
	if err == nil && at != pid {
		// The statements after the acquire ran on another backend: only a
		// pooler in transaction mode does that.
		err = &backendChanged{stmt: "statement after the acquire", answered: at, session: pid}
	}
	if err != nil {
		return 0, "", err
	}
	return t, cache, nil
}

// fencedRow runs a fenced acquire statement q (built in the Params style)
// on conn and scans its row into dest. Drivers of the Params style send it
// as it is (pgx caches it as a prepared statement). Drivers of the Inline
// style (lib/pq) would have the server plan its text on every call. A
// multiplexed session keeps its connection, and with it a statement
// prepared through the driver in stmt (nil until the first call; lib/pq
// then runs it in one round trip). A dedicated session (stmt nil) has a
// connection from the pool each time, on which the statement may already
// be prepared at the SQL level (sqltext.PrepareFenced): it runs it so,
// preparing it the first time the backend meets it. A statement prepared
// on one backend and missing on the next is a pooler in transaction mode
// (ErrPooler).
func (l *Locker) fencedRow(ctx context.Context, conn *sql.Conn, stmt **sql.Stmt, q string, args []any, dest ...any) error {
	if l.style != sqltext.Inline {
		return conn.QueryRowContext(ctx, q, args...).Scan(dest...)
	}
	if stmt != nil {
		if p := preparedOn(ctx, conn, stmt, q); p != nil {
			err := p.QueryRowContext(ctx, args...).Scan(dest...)
			if pgerr.SQLState(err) == pgerr.UndefinedPrepared {
				return errorf("advisory: the fencing statement prepared on this session is missing: %w (%w)", ErrPooler, err)
			}
			return err
		}
		// Not prepared: run it as a dedicated session does.
	}
	p := sqltext.PrepareFenced(q, args)
	err := conn.QueryRowContext(ctx, p.Execute).Scan(dest...)
	if pgerr.SQLState(err) != pgerr.UndefinedPrepared {
		return err
	}
	// A session that has not prepared it yet: nothing ran.
	if _, err := conn.ExecContext(ctx, p.Prepare); err != nil {
		if pgerr.SQLState(err) == pgerr.DuplicatePrepared {
			// The session said a moment ago that it had no such statement:
			// another backend answers now.
			return errorf("advisory: the fencing statement was missing on one backend and is prepared on the next: %w (%w)", ErrPooler, err)
		}
		return err
	}
	err = conn.QueryRowContext(ctx, p.Execute).Scan(dest...)
	if pgerr.SQLState(err) == pgerr.UndefinedPrepared {
		return errorf("advisory: the fencing statement prepared a moment ago is missing: %w (%w)", ErrPooler, err)
	}
	return err
}
