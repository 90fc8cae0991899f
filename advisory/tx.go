package advisory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
)

// Tx runs fn in a transaction on the very connection that holds the lock,
// and commits if fn returns nil (else rolls back). This fences writes to
// this database by construction: if the session is gone, so is the lock,
// and the transaction fails; a commit that succeeded happened while the lock
// was held.
//
// Tx returns an error wrapping ErrLockLost if the lease is lost (before, or
// found during the transaction), ErrReleased after Release, else fn's error
// or the commit's. A panic in fn rolls back and re-panics. Calls of Tx on one
// lease run one after the other, and Release waits for a running Tx. While a
// transaction runs the keepalive stays off the connection (it never sends a
// statement inside it): bound fn's statements with ctx, since a loss is then
// found by them rather than by the keepalive.
func (ls *Lease) Tx(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	if ls == nil {
		return errorf("advisory: Tx on a nil lease: %w", ErrReleased)
	}
	if fn == nil {
		return errors.New("advisory: Tx with a nil function")
	}
	ls.connMu.Lock()
	defer ls.connMu.Unlock()
	// Checked under connMu: Release and a loss's discard take it too, so the
	// connection is still the lease's for as long as Tx holds it.
	if err := ls.usable(); err != nil {
		return err
	}
	tx, err := ls.conn.BeginTx(ctx, nil)
	if err != nil {
		return ls.txFailed(ctx, "begin", err)
	}
	committed := false
	defer func() {
		if !committed {
			// A panic in fn (or a failure below): roll back. If the rollback
			// itself fails the session is in doubt; check it.
			if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
				_ = ls.txFailed(context.WithoutCancel(ctx), "rollback", rerr)
			}
		}
	}()
	if ferr := fn(tx); ferr != nil {
		if lerr := ls.usable(); lerr != nil {
			return fmt.Errorf("%w (%w)", lerr, ferr)
		}
		return ferr
	}
	if err := tx.Commit(); err != nil {
		committed = true // nothing left to roll back
		return ls.txFailed(ctx, "commit", err)
	}
	committed = true
	return nil
}

// usable returns nil while the lease holds its lock, else the error that
// says why not (the loss, or ErrReleased).
func (ls *Lease) usable() error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	switch {
	case ls.err != nil && ls.err != ErrReleased:
		return ls.err
	case ls.released || ls.err != nil:
		return errorf("advisory: lease of %v: %w", keyArg(ls.keys), ErrReleased)
	}
	return nil
}

// txFailed handles a failed begin, commit or rollback: if the session no
// longer answers as the backend that took the lock, the lease is lost and
// the error says so. The caller holds connMu.
func (ls *Lease) txFailed(ctx context.Context, what string, err error) error {
	err = errorf("advisory: %s on the lease's connection: %w", what, err)
	if lerr := ls.usable(); lerr != nil {
		return fmt.Errorf("%w (%w)", lerr, err)
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ls.l.pingTimeout)
	defer cancel()
	var pid int
	perr := ls.conn.QueryRowContext(pctx, sqltext.Ping).Scan(&pid)
	switch {
	case perr != nil:
		ls.lose(fmt.Errorf("%s failed and the connection does not answer: %w", what, perr))
	case pid != ls.sess.be.pid:
		ls.lose(fmt.Errorf("%s failed and backend %d answers instead of %d: %w", what, pid, ls.sess.be.pid, ErrPooler))
	default:
		return err // the session and its lock are intact
	}
	return fmt.Errorf("%w (%w)", ls.Err(), err)
}
