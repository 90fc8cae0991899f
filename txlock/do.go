package txlock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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
// held from before fn runs until the commit or rollback has finished.
//
// If fn returns an error, Do rolls back and returns that error as it is (a
// failed rollback is joined to it). If fn panics, Do rolls back and panics
// again with the same value. fn must not commit or roll back tx itself. The
// transaction ends with ctx as database/sql ends it: a context that ends while
// fn runs rolls it back.
func Do(ctx context.Context, db Beginner, key keyspace.Key, fn func(tx *sql.Tx) error, opts ...Option) (err error) {
	if db == nil || isNil(reflect.ValueOf(db)) {
		return errors.New("txlock: Do: nil database")
	}
	if fn == nil {
		return errors.New("txlock: Do: nil function")
	}
	o := collect(opts)
	tx, err := db.BeginTx(ctx, o.txOpts)
	if err != nil {
		return fmt.Errorf("txlock: begin: %w", err)
	}
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
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("txlock: commit: %w", err)
	}
	return nil
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
// ended already (database/sql rolls back itself when the context ends).
func rollback(tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("txlock: rollback: %w", err)
	}
	return nil
}
