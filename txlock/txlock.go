package txlock

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/errfmt"
	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Querier is what the lock functions need of a transaction: one method that
// runs a query returning one row. *sql.Tx and *sqlx.Tx satisfy it. When the
// value also has ExecContext (as they do), the single-key locks are sent
// with it and read the rows affected, which costs less than a result set.
// The value must run every call inside the same open transaction; a value
// that can begin transactions itself (a *sql.DB, *sqlx.DB or *sql.Conn) is
// rejected with ErrNotTransaction.
type Querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Errors returned by this package; compare with errors.Is.
var (
	// ErrLockTimeout means the server's lock_timeout ended the wait
	// (SQLSTATE 55P03). It is the same value as advisory.ErrLockTimeout.
	ErrLockTimeout = pgerr.ErrLockTimeout

	// ErrOutOfLockMemory means the server's lock table is full (SQLSTATE
	// 53200). It is the same value as advisory.ErrOutOfLockMemory.
	ErrOutOfLockMemory = pgerr.ErrOutOfLockMemory

	// ErrNotTransaction means the value passed as the transaction is nil or
	// can begin transactions of its own (a *sql.DB, *sqlx.DB or *sql.Conn),
	// where a transaction lock would be released as soon as it is taken.
	// Nothing was sent to the server.
	ErrNotTransaction = errors.New("txlock: not a transaction (want *sql.Tx, *sqlx.Tx or another value that runs inside one open transaction)")

	// ErrNotAcquired means a try (TryLock, or WithTry) found the key held in
	// a conflicting mode by another transaction or session.
	ErrNotAcquired = errors.New("txlock: lock held elsewhere")

	// ErrNoKeys means LockAll was called without keys.
	ErrNoKeys = errors.New("txlock: no keys to lock")
)

// Option adjusts one call.
type Option func(*options)

type options struct {
	timeout  time.Duration
	shared   bool
	try      bool
	txOpts   *sql.TxOptions
	drv      driver.Driver
	deadPeer time.Duration // WithDeadPeerTimeout
}

// WithLockTimeout bounds the wait for the lock with the server's lock_timeout
// (at least 1 ms; d <= 0 means no bound beyond the context). It applies to the
// lock statement only: the transaction's own lock_timeout is read and put back
// in that same statement, so later statements of the transaction are not
// affected. When it runs out the error matches ErrLockTimeout, and the
// transaction is aborted, like after any failed statement. Tries (TryLock,
// WithTry) do not wait and ignore it.
func WithLockTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithShared takes the lock in shared mode (pg_advisory_xact_lock_shared):
// shared holders exclude exclusive ones but not each other. Lock with
// WithShared is LockShared.
func WithShared() Option { return func(o *options) { o.shared = true } }

// WithTry makes the call answer at once instead of waiting: Lock, LockShared
// and Do return ErrNotAcquired when the key is held elsewhere. TryLock and
// TryLockShared always try.
func WithTry() Option { return func(o *options) { o.try = true } }

// WithTxOptions sets the isolation level and read-only flag of the
// transaction that Do begins. The other functions receive a transaction that
// is already open and ignore it.
func WithTxOptions(txOpts *sql.TxOptions) Option { return func(o *options) { o.txOpts = txOpts } }

// WithDriver tells txlock the driver behind the transaction (pass
// db.Driver() of the *sql.DB it came from), so the statement is written in the
// style that suits it. Without it, and when the transaction does not tell its
// driver itself (see the package documentation), keys go as parameters, which
// every driver accepts; lib/pq then spends an extra round trip preparing the
// statement (measured here: about 0.3 ms per lock on loopback instead of 0.1).
func WithDriver(d driver.Driver) Option { return func(o *options) { o.drv = d } }

func collect(opts []Option) options {
	var o options
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	return o
}

// Lock takes key in exclusive mode for the rest of the transaction tx,
// waiting while another transaction or session holds it. The wait ends with
// the context, or with ErrLockTimeout under WithLockTimeout. A lock taken
// twice in one transaction is held twice; both are released at COMMIT or
// ROLLBACK.
func Lock(ctx context.Context, tx Querier, key keyspace.Key, opts ...Option) error {
	o := collect(opts)
	return lockOne(ctx, tx, o.style(tx), key, o)
}

// LockShared is Lock in shared mode.
func LockShared(ctx context.Context, tx Querier, key keyspace.Key, opts ...Option) error {
	o := collect(opts)
	o.shared = true
	return lockOne(ctx, tx, o.style(tx), key, o)
}

// TryLock takes key in exclusive mode for the rest of the transaction if no
// one else holds it, and reports whether it did. It does not wait. A false
// result leaves the transaction usable.
func TryLock(ctx context.Context, tx Querier, key keyspace.Key, opts ...Option) (bool, error) {
	o := collect(opts)
	o.try = true
	return tryOne(ctx, tx, o.style(tx), key, o)
}

// TryLockShared is TryLock in shared mode.
func TryLockShared(ctx context.Context, tx Querier, key keyspace.Key, opts ...Option) (bool, error) {
	o := collect(opts)
	o.try, o.shared = true, true
	return tryOne(ctx, tx, o.style(tx), key, o)
}

func lockOne(ctx context.Context, tx Querier, style sqltext.Style, key keyspace.Key, o options) error {
	ok, err := tryOne(ctx, tx, style, key, o)
	if err != nil {
		return err
	}
	if !ok {
		return errorf("txlock: lock %v: %w", key, ErrNotAcquired)
	}
	return nil
}

func tryOne(ctx context.Context, tx Querier, style sqltext.Style, key keyspace.Key, o options) (bool, error) {
	if err := checkTx(tx); err != nil {
		return false, err
	}
	if err := boundDeadPeer(ctx, tx, o); err != nil {
		return false, err
	}
	timeout := o.timeout
	if o.try {
		timeout = 0 // a try does not wait: no lock_timeout to set and restore
	}
	m := sqltext.Mode{Shared: o.shared, Try: o.try}
	if ex, isExecer := tx.(execer); isExecer {
		// The rows affected say whether the lock was taken: no result set.
		q, args := sqltext.XactLockExec(style, m, key, timeout)
		res, err := ex.ExecContext(ctx, q, args...)
		var n int64
		if err == nil {
			n, err = res.RowsAffected()
		}
		if err != nil {
			return false, fail(ctx, "lock "+key.String(), err)
		}
		return n == 1, nil
	}
	q, args := sqltext.XactLock(style, m, key, timeout)
	var ok bool
	if err := tx.QueryRowContext(ctx, q, args...).Scan(&ok); err != nil {
		return false, fail(ctx, "lock "+key.String(), err)
	}
	return ok, nil
}

// execer is the optional method of a transaction that lets a lock go with
// Exec (*sql.Tx and *sqlx.Tx have it; a Querier without it gets a query).
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// LockAll takes every key in exclusive mode for the rest of the transaction,
// in one statement. The keys are de-duplicated and taken in the order of
// keyspace.Key.Less, whatever order they are given in, and the statement is
// built so that the server cannot reorder them: transactions that take their
// keys with one LockAll each never deadlock on each other, whatever sets of
// keys they take. Called
// without keys it returns ErrNoKeys. On an error some keys may already be
// held; they are released with the transaction, which the error has aborted.
func LockAll(ctx context.Context, tx Querier, keys ...keyspace.Key) error {
	return lockAll(ctx, tx, keys, options{})
}

// LockAllTimeout is LockAll with every wait bounded by the server's
// lock_timeout, as WithLockTimeout(timeout) does for Lock: the transaction's
// own lock_timeout is restored in the same statement, and a wait that runs
// out returns an error matching ErrLockTimeout.
func LockAllTimeout(ctx context.Context, tx Querier, timeout time.Duration, keys ...keyspace.Key) error {
	return lockAll(ctx, tx, keys, options{timeout: timeout})
}

// LockAllWith is LockAll with options: WithLockTimeout, WithDriver and
// WithDeadPeerTimeout apply;
// WithShared takes every key in shared mode. WithTry is refused (a partial
// set of transaction locks could not be given back before the transaction
// ends), as is WithTxOptions.
func LockAllWith(ctx context.Context, tx Querier, opts []Option, keys ...keyspace.Key) error {
	o := collect(opts)
	if o.try || o.txOpts != nil {
		return errors.New("txlock: LockAllWith: WithTry and WithTxOptions do not apply to LockAll")
	}
	return lockAll(ctx, tx, keys, o)
}

func lockAll(ctx context.Context, tx Querier, keys []keyspace.Key, o options) error {
	if err := checkTx(tx); err != nil {
		return err
	}
	if len(keys) == 0 {
		return ErrNoKeys
	}
	if err := boundDeadPeer(ctx, tx, o); err != nil {
		return err
	}
	sorted := Sorted(keys)
	q, args := sqltext.XactLockAll(o.style(tx), sqltext.Mode{Shared: o.shared}, sorted, o.timeout)
	var n int64
	if err := tx.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return fail(ctx, fmt.Sprintf("lock all of %d keys", len(sorted)), err)
	}
	if n != int64(len(sorted)) {
		return errorf("txlock: lock all: server reports %d of %d keys held", n, len(sorted))
	}
	return nil
}

// Sorted returns a new slice holding keys in the order of keyspace.Key.Less
// without duplicates: the order in which LockAll takes them.
func Sorted(keys []keyspace.Key) []keyspace.Key {
	out := slices.Clone(keys)
	slices.SortFunc(out, keyspace.Compare)
	return slices.Compact(out)
}

// fail wraps a failed lock statement: the server's SQLSTATE mapped to the
// shared sentinels, and the context's error when it ended the wait.
func fail(ctx context.Context, what string, err error) error {
	err = pgerr.Classify(err)
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return errorf("txlock: %s: %w: %w", what, cerr, err)
	}
	return errorf("txlock: %s: %w", what, err)
}

// checkTx rejects, before anything is sent, values that are no transaction:
// nil, and anything that can begin a transaction or hand out a connection of
// its own (*sql.DB, *sqlx.DB, *sql.Conn, *sqlx.Conn), on which a transaction
// lock would be released at the end of its own statement.
func checkTx(tx Querier) error {
	if tx == nil {
		return fmt.Errorf("%w: got nil", ErrNotTransaction)
	}
	if isNil(reflect.ValueOf(tx)) {
		return fmt.Errorf("%w: got a nil %T", ErrNotTransaction, tx)
	}
	switch tx.(type) {
	case interface {
		BeginTx(context.Context, *sql.TxOptions) (*sql.Tx, error)
	}, interface{ Begin() (*sql.Tx, error) },
		interface {
			Conn(context.Context) (*sql.Conn, error)
		}:
		return fmt.Errorf("%w: got %T, which runs each statement in its own transaction", ErrNotTransaction, tx)
	}
	return nil
}

func isNil(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return v.IsNil()
	}
	return false
}

// style picks how keys are written for q: WithDriver's driver if given, else
// what q tells of its driver, else parameters, which every driver accepts.
func (o options) style(q any) sqltext.Style {
	if o.drv != nil {
		return sqltext.StyleOf(o.drv)
	}
	return styleOf(q)
}

// styleOf reads q's driver through the optional methods that tell it: a
// Driver() driver.Driver method (*sql.DB, *sqlx.DB, or a wrapper around a
// *sql.Tx), or sqlx's DriverName() string, where "postgres" is lib/pq's
// registered name. Either style is valid SQL on every driver; the choice only
// saves round trips.
func styleOf(q any) sqltext.Style {
	switch d := q.(type) {
	case interface{ Driver() driver.Driver }:
		if drv := d.Driver(); drv != nil {
			return sqltext.StyleOf(drv)
		}
	case interface{ DriverName() string }:
		if d.DriverName() == "postgres" {
			return sqltext.Inline
		}
	}
	return sqltext.Params
}

// errorf is fmt.Errorf for the messages of this package, which name it once
// however many of its errors they wrap (errfmt.Errorf).
func errorf(format string, args ...any) error {
	return errfmt.Errorf("txlock: ", format, args...)
}
