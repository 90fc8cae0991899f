package advisory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
)

// Release gives the lock back. It runs under context.WithoutCancel(ctx), so
// a cancelled ctx still releases, and it waits for a running Tx to end.
//
// A nil error means that the lease's session held the lock from the grant
// until this Release, verified by a round trip on that session after the
// lease's last statement: the unlock itself, which reports whether the
// session held every key in the lease's mode (for a shared lease: one of
// the session's shared holds of the key), or, when the lock is handed to
// the next goroutine of the process (see below), a check that the same
// backend still answers. A session lock ends only with an unlock or with
// its session, so an answer from the same backend proves that it was held
// throughout. This holds for every kind of lease: one key or a LockAll set,
// exclusive or shared, on a dedicated or a multiplexed session.
//
// Otherwise Release returns an error: one wrapping ErrLockLost when the
// session was found gone, or no longer holding a key (the lease is then
// lost: Lost is closed, the AfterLost functions and the Lost hook run, and
// on a multiplexed session every lease of that session is lost with it), or
// one wrapping context.DeadlineExceeded when an unlock on a dedicated
// session was interrupted before it answered (held until then or not,
// nobody can say). A dedicated session whose state is in doubt is
// discarded, ending the session and whatever it held.
//
// The unlock is bounded. On a multiplexed session the keepalive sweep bounds
// every batch (about the keepalive interval; beyond it the session is lost).
// On a dedicated session an unlock still running after 5 s is interrupted:
// with pgx through its socket (the Locker's keepalive sweep sets the
// socket's deadline, so no per-statement context is watched), with other
// drivers that honour contexts through a shared deadline context; lib/pq
// can only ask the server to cancel, which cannot cut short an unlock, so
// there the unlock is bounded by the TCP settings of the connection (a
// net.Dialer with KeepAliveConfig given to pq.Connector.Dialer sets them).
//
// If another goroutine of the process is queued for the key in exclusive
// mode, Release may hand the held lock, with its session, straight to it
// instead of unlocking (see WithHandoff); for the caller this lease is
// released either way.
//
// Release of a lost lease returns its loss error at once; its connection is
// discarded in the background as soon as the driver returns from any call
// stuck on it. Release of a nil Lease returns nil; a second Release returns
// an error wrapping ErrReleased.
func (ls *Lease) Release(ctx context.Context) error {
	if ls == nil {
		return nil
	}
	ls.relMu.Lock()
	defer ls.relMu.Unlock()
	ls.mu.Lock()
	if ls.released {
		ls.mu.Unlock()
		return errorf("advisory: release %v: %w", keyArg(ls.keys), ErrReleased)
	}
	ls.released = true // no Tx begins from here on; a running one ends first
	ls.mu.Unlock()
	if ls.lossErr() != nil {
		return ls.endLost()
	}
	if ls.s.mux {
		return ls.releaseShared()
	}
	return ls.releaseOwn(ctx)
}

// releaseShared releases a lease of a multiplexed session: an unlock (or,
// for a handoff, a ping) in the session's next batch.
func (ls *Lease) releaseShared() error {
	s := ls.s
	if ls.mayHandoff() {
		if err := s.submit(context.Background(), &op{ping: true}); err != nil {
			return ls.endLost()
		}
		if ls.handOn() {
			return ls.released0(true)
		}
	}
	kind := sqltext.OpUnlock
	if ls.shared {
		kind = sqltext.OpUnlockShared
	}
	// On a true answer the batch takes the lease off the session before any
	// later loss of the session can find it.
	if err := s.submit(context.Background(), &op{kind: kind, key: ls.keys[0], lease: ls}); err != nil {
		return ls.endLost()
	}
	return ls.released0(false)
}

// releaseOwn releases a lease of a dedicated session: an unlock on its
// connection, which then goes back to the pool (or a ping, and the session
// goes on with the next lease).
func (ls *Lease) releaseOwn(ctx context.Context) error {
	s, l := ls.s, ls.l
	l.ka.unwatch(s) // the release's own statement answers for the session now
	if !s.take() {
		// Lost while a ping or a Tx ran on the connection: the loss
		// discards it as soon as the driver lets go of it (a call stuck on
		// a silent network, which lib/pq cannot interrupt, must not hold
		// Release up).
		return ls.endLost()
	}
	// Nothing runs on the connection now, and whatever the last statement
	// found is recorded. A loss's discard waits for it to be given back.
	defer s.give()
	if ls.lossErr() != nil {
		return ls.endLost()
	}
	if ls.mayHandoff() {
		// The lock goes on without an unlock, so nothing else would find
		// that the session died after the lease's last statement: ask.
		if err := s.ping(l.pingTimeout); err != nil {
			s.loseHeld(fmt.Errorf("release: %w", err))
			return ls.endLost()
		}
		if ls.handOn() {
			l.ka.watch(s, mono(), l.opts.keepAlive)
			return ls.released0(true)
		}
	}
	bySocket := s.ci.nc != nil
	rctx := ctx
	if l.releaseDeadline && !bySocket {
		rctx = l.relBound.context(ctx, l.relTimeout)
	} else if ctx.Done() != nil {
		rctx = context.WithoutCancel(ctx)
	} // else ctx can never be cancelled: use it as it is, one allocation less
	if bySocket {
		// The keepalive sweep bounds this release (see netConnOf): it
		// interrupts the statement if it has not ended in time.
		l.ka.watchStmt(s, mono()+int64(l.relTimeout))
	}
	failed := l.unlock(rctx, s.conn, ls.keys, ls.shared)
	// Interrupted, the connection must not go back to the pool, even if the
	// unlock ended just in time: the socket's deadline is set, or about to be.
	interrupted := bySocket && l.ka.endStmt(s)
	if failed != nil && !interrupted && !errors.Is(rctx.Err(), context.DeadlineExceeded) {
		// The session did not hold every key, or did not answer: whatever
		// the cause, the lock was not held until now.
		s.loseHeld(failed)
		return ls.endLost()
	}
	if interrupted && failed != nil {
		cause := failed
		if inner := errors.Unwrap(failed); inner != nil {
			cause = inner // without unlock's "advisory: release k:" prefix
		}
		failed = errorf("advisory: release %v: not done within %v: %w (%w)",
			keyArg(ls.keys), l.relTimeout, context.DeadlineExceeded, cause)
	}
	s.detach(ls)
	ls.markReleased()
	s.close(failed != nil || interrupted)
	ls.releaseTicket()
	if h := l.opts.hooks.Released; h != nil {
		h(ls.keys[0], ls.shared, ls.held())
	}
	if failed != nil {
		l.log(slog.LevelError, "advisory: release failed, connection discarded", ls.keys, slog.Any("error", failed))
		return failed
	}
	if l.opts.logger != nil {
		l.log(slog.LevelDebug, "advisory: lock released", ls.keys, slog.Duration("held", ls.held()))
	}
	return nil
}

// released0 finishes a release that found the lock held: by its unlock, or,
// handedOn, by the check before the handoff (the next lease holds the lock
// now and the queue place went with it).
func (ls *Lease) released0(handedOn bool) error {
	ls.markReleased()
	if !handedOn {
		ls.releaseTicket()
	}
	if h := ls.l.opts.hooks.Released; h != nil {
		h(ls.keys[0], ls.shared, ls.held())
	}
	if ls.l.opts.logger != nil {
		msg := "advisory: lock released"
		if handedOn {
			msg = "advisory: lock handed to the next waiter"
		}
		ls.l.log(slog.LevelDebug, msg, ls.keys, slog.Duration("held", ls.held()))
	}
	return nil
}

// endLost ends the Release of a lost lease: the queue place goes back, and
// the loss error is the answer.
func (ls *Lease) endLost() error {
	ls.releaseTicket()
	if err := ls.lossErr(); err != nil {
		return err
	}
	// The session ended without finding the lease on it (cannot happen
	// while the lease holds a place on it): never a nil answer.
	return errorf("advisory: release %v: the session ended: %w", keyArg(ls.keys), ErrLockLost)
}

// mayHandoff reports whether Release may hand the held lock on: the lease
// holds one key exclusively, in the process's queue, with someone queued
// behind it, within the fairness budget (WithHandoff).
func (ls *Lease) mayHandoff() bool {
	o := &ls.l.opts
	return ls.ticket != nil && !ls.shared && !o.fencing && ls.passes < o.handoffs &&
		ls.ticket.Waiting() > 0 && time.Duration(mono()-ls.serverGrant) < o.handoffWindow
}

// handOn passes the held lock, with the lease's place on its session and in
// the process's queue, to the next goroutine queued for the key in
// exclusive mode. It reports whether it did (false if nobody takes it, or
// the session ended). The caller checked the session after the lease's last
// statement.
func (ls *Lease) handOn() bool {
	next := &Lease{
		l: ls.l, s: ls.s, keys: ls.keys,
		serverGrant: ls.serverGrant, passes: ls.passes + 1,
	}
	if !ls.s.handOn(ls, next) {
		return false
	}
	ls.ticket = nil
	// next.grant and its ticket are set by the waiter (Locker.lockQueued).
	return true
}
