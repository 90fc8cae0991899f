// Package pgerr classifies PostgreSQL errors from either driver (lib/pq and
// pgx both expose SQLState()) and holds the sentinels that advisory and txlock
// share, so errors.Is works the same whichever package returned the error.
package pgerr

import (
	"errors"
	"fmt"
)

// SQLSTATE codes this module acts on.
const (
	LockNotAvailable  = "55P03" // lock_timeout expired
	OutOfMemory       = "53200" // out of shared memory: the lock table is full
	QueryCanceled     = "57014" // statement_timeout, or a cancel request
	AdminShutdown     = "57P01" // pg_terminate_backend, server shutdown
	CrashShutdown     = "57P02" // another backend crashed: the server restarts
	DeadlockDetected  = "40P01"
	UndefinedTable    = "42P01"
	UndefinedColumn   = "42703"
	UndefinedPrepared = "26000" // invalid_sql_statement_name: EXECUTE of a name the session has not prepared
	DuplicatePrepared = "42P05" // duplicate_prepared_statement: PREPARE of a name the session has prepared
	InvalidColumnRef  = "42P10" // among others: no unique constraint matches ON CONFLICT
	ReadOnlySQLTxn    = "25006"
	InFailedSQLTxn    = "25P02"
	ActiveSQLTxn      = "25001"
	NoActiveSQLTxn    = "25P01"
	FeatureNotSupport = "0A000"
)

// ErrNoFenceTable means fencing is on but the fencing table (or its
// sequence) does not exist; advisory and txlock both return it.
var ErrNoFenceTable = errors.New("the fencing table or its sequence does not exist: create them once with advisory.CreateFenceTable(ctx, db, table), the SQL of advisory.FenceTableSQL(table), or pglock fence init")

// ErrBadFenceTable means a fencing table name is not a plain (optionally
// schema-qualified) identifier; advisory and txlock both return it.
var ErrBadFenceTable = errors.New("bad fencing table name: want letters, digits and underscores, at most 59 bytes for the table (its sequence adds _seq), optionally schema.table")

// ErrNoFenceEpoch means the fencing table exists but has no row, which holds
// the epoch that every token needs; advisory and txlock both return it.
var ErrNoFenceEpoch = errors.New("the fencing table has no epoch row: run advisory.CreateFenceTable or pglock fence init again, which adds it")

// ErrFenceLayout means a table of the fencing table's name exists with a
// layout that is neither the current one nor the per-key one of earlier
// versions (ErrFenceOldLayout); advisory and txlock both return it.
var ErrFenceLayout = errors.New("the fencing table has another layout than (one bool, epoch int8, base int8, boot text): pick another name with WithFencing, or drop it and create it again with advisory.CreateFenceTable or pglock fence init")

// ErrFenceOldLayout means the fencing table has the per-key layout of
// earlier versions (kind, key, token, boot), whose rows grew with the keys;
// advisory and txlock both return it.
var ErrFenceOldLayout = errors.New("the fencing table has the per-key layout of an earlier version (kind, key, token, boot): migrate it once, keeping every later token above the old ones, with the SQL of advisory.FenceMigrateSQL(table) or pglock fence migrate (pglock fence init prints that SQL)")

// ErrFenceExhausted means the fencing table's epoch reached its limit
// (2^23 - 1): no higher token can be made.
var ErrFenceExhausted = errors.New("the fencing epochs are exhausted: no token above the last one fits in 63 bits")

// FenceError maps the errors of a statement on the fencing table whose
// layout is not checked: a table of another layout to ErrFenceLayout (the
// server's error stays in the chain); other errors are returned as they are.
func FenceError(err error) error {
	switch SQLState(err) {
	case UndefinedColumn, InvalidColumnRef:
		return fmt.Errorf("%w (%w)", ErrFenceLayout, err)
	}
	return err
}

// ErrLockTimeout means the server's lock_timeout ended the wait (SQLSTATE 55P03).
var ErrLockTimeout = errors.New("lock wait exceeded lock_timeout")

// ErrOutOfLockMemory means the server's lock table is full (SQLSTATE 53200,
// "out of shared memory"): raise max_locks_per_transaction or hold fewer locks.
var ErrOutOfLockMemory = errors.New("server lock table is full (out of shared memory): raise max_locks_per_transaction or hold fewer locks")

// SQLState returns the SQLSTATE of err, or "" if err carries none. It reads
// any error in the chain with a SQLState() string method (*pq.Error,
// *pgconn.PgError).
func SQLState(err error) string {
	var e interface{ SQLState() string }
	if errors.As(err, &e) {
		return e.SQLState()
	}
	return ""
}

// Classify wraps err with the sentinel its SQLSTATE maps to, keeping err
// reachable with errors.As. Errors without a mapped SQLSTATE come back as
// they are.
func Classify(err error) error {
	switch SQLState(err) {
	case LockNotAvailable:
		return fmt.Errorf("%w: %w", ErrLockTimeout, err)
	case OutOfMemory:
		return fmt.Errorf("%w: %w", ErrOutOfLockMemory, err)
	}
	return err
}
