package advisory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Tx runs fn in a transaction on the very connection that holds the lock,
// and commits if fn returns nil (else rolls back). This fences writes to
// this database by construction: if the session is gone, so is the lock,
// and the transaction fails; a commit that succeeded happened while the lock
// was held.
//
// Tx returns an error wrapping ErrLockLost if the lease is lost: before the
// transaction, or found during it, by any statement of fn, the commit or the
// rollback. ctx bounds fn's statements (pass it to them); the transaction
// itself does not end when ctx does (database/sql would close the
// connection, and the session and its lock with it): if ctx has ended when
// fn returns, Tx rolls back instead of committing and returns ctx's error. A
// statement that ctx cut short may still cost the session (pgx closes the
// connection): when the transaction fails and its rollback does not succeed,
// or ctx ended, Tx checks that the lease's backend still answers before it
// returns, so a lease whose Err is nil after Tx still holds its lock.
// Otherwise Tx returns ErrReleased after Release has started, else fn's
// error or the commit's. A panic in fn rolls back and re-panics. Calls of Tx
// on one lease run one after the other, and Release waits for a running Tx.
// While a transaction runs the keepalive stays off the connection (it never
// sends a statement inside it): bound fn's statements with ctx, since a loss
// is then found by them rather than by the keepalive.
func (ls *Lease) Tx(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	if ls == nil {
		return errorf("advisory: Tx on a nil lease: %w", ErrReleased)
	}
	if fn == nil {
		return errors.New("advisory: Tx with a nil function")
	}
	if err := ls.usable(); err != nil {
		return err
	}
	if !ls.s.take() {
		return ls.Err()
	}
	defer ls.s.give()
	// Checked while the connection is the Tx's: Release and a loss's
	// discard wait for it, so it stays the lease's until Tx returns.
	if err := ls.usable(); err != nil {
		return err
	}
	// The transaction does not end with ctx: database/sql would roll it
	// back and close the connection from a goroutine of its own when ctx
	// ends (also after fn returned, so a check made meanwhile would find a
	// session that dies right after), and the session would take the lock
	// with it. ctx bounds fn's statements (fn passes it); once fn returns,
	// a ctx that ended means a rollback here instead of a commit.
	tx, err := ls.s.conn.BeginTx(context.WithoutCancel(ctx), nil)
	if err != nil {
		return ls.txFailed("begin", err)
	}
	ended := false
	defer func() {
		if !ended {
			// fn panicked: roll back, and check the session if that fails.
			if rerr := tx.Rollback(); rerr != nil {
				_ = ls.txFailed("rollback", rerr)
			}
		}
	}()
	if ferr := fn(tx); ferr != nil {
		ended = true
		// A rollback that succeeds proves the session alive, unless ctx
		// ended during the transaction: then the driver may close the
		// connection as the transaction ends, after a successful rollback
		// too (lib/pq does). A rollback that fails (also with ErrTxDone:
		// database/sql rolled back on its own as ctx ended, and may have
		// closed the connection) leaves the session in doubt. Either way
		// fn's error may be the first sign of a loss.
		if rerr := tx.Rollback(); rerr != nil || ctx.Err() != nil {
			if lerr := ls.check("the transaction failed"); lerr != nil {
				return fmt.Errorf("%w (%w)", lerr, ferr)
			}
		}
		return ferr
	}
	ended = true
	if cerr := ctx.Err(); cerr != nil {
		// As database/sql does for a transaction whose context ended: no
		// commit. A rollback that succeeds proves the session alive.
		if rerr := tx.Rollback(); rerr != nil {
			return fmt.Errorf("%w (%w)", ls.txFailed("rollback", rerr), cerr)
		}
		return errorf("advisory: transaction rolled back, its context ended: %w", cerr)
	}
	if err := tx.Commit(); err != nil {
		return ls.txFailed("commit", err)
	}
	return nil
}

// usable returns nil while the lease holds its lock and no Release has
// started, else the error that says why not (the loss, or ErrReleased).
func (ls *Lease) usable() error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	switch {
	case ls.isLost:
		return ls.err
	case ls.released || ls.err != nil:
		return errorf("advisory: lease of %v: %w", keyArg(ls.keys), ErrReleased)
	}
	return nil
}

// txFailed handles a failed begin, commit or rollback: if the session no
// longer answers as the backend that took the lock, the lease is lost and
// the error says so. The caller holds the connection.
func (ls *Lease) txFailed(what string, err error) error {
	err = errorf("advisory: %s on the lease's connection: %w", what, err)
	if lerr := ls.check(what + " failed"); lerr != nil {
		return fmt.Errorf("%w (%w)", lerr, err)
	}
	return err // the session and its lock are intact
}

// check asks the lease's session whether it is still the backend that took
// the lock (session.check); if not, the lease is lost and check returns the
// loss error. The caller holds the connection.
func (ls *Lease) check(what string) error {
	if lerr := ls.lossErr(); lerr != nil {
		return lerr
	}
	if ls.s.check(what) != nil {
		return ls.lossErr()
	}
	return nil
}
