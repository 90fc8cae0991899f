package txlock

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"reflect"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Beginner begins transactions: *sql.DB, *sql.Conn and *sqlx.DB satisfy it.
type Beginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// Do runs fn as one unit of work under key: it begins a transaction on db
// (with WithTxOptions, if given), takes key (exclusive; shared with
// WithShared; without waiting, returning ErrNotAcquired, with WithTry; bounded
// by WithLockTimeout), runs fn with the transaction and commits. The lock is
// held from before fn runs until the commit or rollback has finished, and
// that has finished when Do returns.
//
// If fn returns an error, Do rolls back and returns that error as it is (a
// failed rollback is joined to it). If fn panics, Do rolls back and panics
// again with the same value. fn must not commit or roll back tx itself.
//
// ctx bounds the wait for a connection and for the lock, and fn should pass
// it to its own statements. If ctx has ended when fn returns, Do rolls back
// instead of committing and returns an error wrapping ctx's error. For a
// *sql.DB, *sqlx.DB or *sql.Conn the rollback runs before Do returns rather
// than in the background as database/sql does for a transaction bound to a
// context; other Beginners get a transaction bound to ctx.
func Do(ctx context.Context, db Beginner, key keyspace.Key, fn func(tx *sql.Tx) error, opts ...Option) (err error) {
	if db == nil || isNil(reflect.ValueOf(db)) {
		return errors.New("txlock: Do: nil database")
	}
	if fn == nil {
		return errors.New("txlock: Do: nil function")
	}
	o := collect(opts)
	tx, release, err := begin(ctx, db, o.txOpts)
	if err != nil {
		return errorf("txlock: begin: %w", err)
	}
	defer release()
	done := false
	defer func() {
		if done {
			return
		}
		// fn panicked (or runtime.Goexit ran): roll back, then let the
		// panic continue as it was.
		_ = tx.Rollback()
	}()
	if err := lockOne(ctx, tx, o.style(db), key, o); err != nil {
		done = true
		return withRollback(err, tx)
	}
	if err := fn(tx); err != nil {
		done = true
		return withRollback(err, tx)
	}
	done = true
	if cerr := ctx.Err(); cerr != nil {
		return withRollback(errorf("txlock: not committed: %w", cerr), tx)
	}
	if err := tx.Commit(); err != nil {
		if cerr := ctx.Err(); cerr != nil && errors.Is(err, sql.ErrTxDone) {
			// database/sql rolled the transaction back when ctx ended.
			return errorf("txlock: commit: %w: %w", cerr, err)
		}
		return errorf("txlock: commit: %w", err)
	}
	return nil
}

// begin starts Do's transaction. On a pool (anything with Conn, as *sql.DB
// and *sqlx.DB have) it first takes a connection under ctx, then begins on it
// without binding the transaction to ctx, so that Do, not database/sql's
// background goroutine, ends it; release gives the connection back.
func begin(ctx context.Context, db Beginner, txOpts *sql.TxOptions) (*sql.Tx, func(), error) {
	var conn *sql.Conn
	switch d := db.(type) {
	case *sql.Conn:
		conn = d
	case interface {
		Conn(context.Context) (*sql.Conn, error)
	}:
		c, err := d.Conn(ctx)
		if err != nil {
			return nil, nil, err
		}
		tx, err := beginOn(ctx, c, txOpts)
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		return tx, func() { c.Close() }, nil
	default:
		tx, err := db.BeginTx(ctx, txOpts)
		return tx, func() {}, err
	}
	tx, err := beginOn(ctx, conn, txOpts)
	return tx, func() {}, err
}

// beginOn begins a transaction on conn that ctx does not end.
func beginOn(ctx context.Context, conn *sql.Conn, txOpts *sql.TxOptions) (*sql.Tx, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return conn.BeginTx(context.WithoutCancel(ctx), txOpts)
}

// withRollback rolls tx back and returns err, joined with the rollback's
// failure if there is one.
func withRollback(err error, tx *sql.Tx) error {
	if rerr := rollback(tx); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// rollback ends tx and reports a failure other than the transaction having
// ended already or its connection being gone (the server then aborts it).
func rollback(tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) && !errors.Is(err, driver.ErrBadConn) {
		return errorf("txlock: rollback: %w", err)
	}
	return nil
}
