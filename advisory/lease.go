package advisory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/keyqueue"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// pingGrace is how long the keepalive waits past a ping's own timeout for
// the driver to return; after that the ping counts as unanswered even if the
// driver call is still stuck (lib/pq cannot interrupt a read on a silent
// network).
const pingGrace = 100 * time.Millisecond

// closedChan is the Lost channel of a lease that was lost before anyone
// asked for it.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Lease is one held lock (or, from LockAll, one set of locks) on its own
// pinned connection. Every method is safe for concurrent use, and Release is
// nil-safe. A Lease must be released even after it was lost, to stop its
// keepalive and let the next goroutine of the process have the key.
type Lease struct {
	l      *Locker
	conn   *sql.Conn
	keys   []keyspace.Key
	sess   *session // its backend is claimed while the lease lives
	grant  int64    // when this lease got the lock (mono)
	tokens []int64  // fencing tokens, in the order of keys; nil without fencing

	// ticket is the lease's place in the Locker's in-process queue (nil for
	// LockAll leases, which bypass it). It is given back after the server
	// lock, or handed on with it.
	ticket *keyqueue.Ticket[keyspace.Key]
	// serverGrant is when the server granted the lock that this lease
	// holds, and passes how many times it was handed on since (Handoff).
	serverGrant int64 // mono
	passes      int

	// connTok, a channel of one slot, is held by whoever sends statements
	// on conn (a keepalive ping, Tx, Release, the discard after a loss); a
	// ping whose driver call hangs keeps it until the call returns. Unlike
	// a mutex, waiting for it can end when the lease is lost (takeConn).
	connTok chan struct{}

	relMu sync.Mutex // serialises Release calls

	mu       sync.Mutex
	err      error         // nil while held, then the loss error or ErrReleased
	lost     chan struct{} // made on demand by Lost; closed on loss
	onLost   []*lossFunc
	released bool // Release has started: Tx refuses to begin
	isLost   bool
	// watched is whether the lease is linked into the keepalive lists, and
	// releasing whether it is there for its release to be interrupted if
	// overdue; both guarded by the lists' mutex.
	watched   bool
	releasing bool

	kaLink

	shared bool // set at the grant, never changed: read without mu
}

// lossFunc is one AfterLost registration.
type lossFunc struct{ f func(error) }

// newLease returns a held lease and starts its keepalive. The keepalive costs
// no goroutine and no timer of its own: the Locker's keepalive sweep
// (keepalives) starts each ping on a goroutine that ends with it, and nothing
// runs between pings.
func newLease(l *Locker, conn *sql.Conn, keys []keyspace.Key, shared bool, sess *session, tokens []int64) *Lease {
	now := mono()
	ls := &Lease{l: l, conn: conn, keys: keys, shared: shared, sess: sess, grant: now, serverGrant: now, tokens: tokens,
		connTok: make(chan struct{}, 1)}
	ls.startKeepalive()
	return ls
}

// startKeepalive schedules the first keepalive ping.
func (ls *Lease) startKeepalive() {
	ls.mu.Lock()
	ls.l.ka.watch(ls, ls.grant, ls.l.opts.keepAlive)
	ls.mu.Unlock()
}

// Key returns the lease's key; for a LockAll lease, the first in sorted order.
func (ls *Lease) Key() keyspace.Key { return ls.keys[0] }

// Keys returns every key of the lease in sorted order (a copy).
func (ls *Lease) Keys() []keyspace.Key { return slices.Clone(ls.keys) }

// Shared reports whether the lease holds its key in shared mode.
func (ls *Lease) Shared() bool { return ls.shared }

// PID returns the server backend pid that holds the lock, as pg_locks and
// pg_stat_activity show it.
func (ls *Lease) PID() int { return ls.sess.be.pid }

// Lost returns a channel that is closed when the lock is lost (not when it
// is released). The channel is made on the first call; AfterLost watches a
// lease without one.
func (ls *Lease) Lost() <-chan struct{} {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.lost == nil {
		if ls.isLost {
			ls.lost = closedChan
		} else {
			ls.lost = make(chan struct{})
		}
	}
	return ls.lost
}

// Err returns nil while the lock is held; after a loss, an error wrapping
// ErrLockLost and the cause (ErrPooler, the driver's error, or
// context.DeadlineExceeded for an unanswered keepalive), also after Release;
// after the Release of a lease that was not lost, ErrReleased.
func (ls *Lease) Err() error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.err
}

// lossErr returns the loss error if the lease was lost, else nil.
func (ls *Lease) lossErr() error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.isLost {
		return ls.err
	}
	return nil
}

// AfterLost arranges for f to run on its own goroutine once the lease is
// lost, with the loss error (the one Err returns), like context.AfterFunc:
// watching a lease this way costs no goroutine until the loss. If the lease
// is already lost, f starts at once. It never runs for a lease released
// without a loss.
//
// stop unregisters f; it returns true if that stopped f from being run, false
// if f was already started (or stop was already called).
func (ls *Lease) AfterLost(f func(err error)) (stop func() bool) {
	lf := &lossFunc{f: f}
	ls.mu.Lock()
	if ls.isLost {
		err := ls.err
		ls.mu.Unlock()
		go f(err)
		return func() bool { return false }
	}
	ls.onLost = append(ls.onLost, lf)
	ls.mu.Unlock()
	return func() bool {
		ls.mu.Lock()
		defer ls.mu.Unlock()
		if i := slices.Index(ls.onLost, lf); i >= 0 {
			ls.onLost = slices.Delete(ls.onLost, i, i+1)
			return true
		}
		return false
	}
}

// Release unlocks and returns the connection to the pool. It runs under
// context.WithoutCancel(ctx), so a cancelled ctx still releases, with its own
// bound of a few seconds where the driver can enforce one: with pgx an unlock
// still running after 5 s is interrupted through its socket (the Locker's
// keepalive sweep sets the socket's deadline, so no per-statement context is
// watched) and the error wraps context.DeadlineExceeded; other drivers that
// honour contexts get a shared deadline context; lib/pq can only ask the
// server to cancel, which cannot cut short an unlock, so there the unlock is
// bounded by the TCP settings of the connection (a net.Dialer with
// KeepAliveConfig given to pq.Connector.Dialer sets them). It waits for a
// running Tx to end.
//
// A nil error means that the lease's session held the lock from the grant
// until this Release, verified by a round trip on that session after the
// lease's last statement: the unlock itself, which reports whether the
// session held every key (in the lease's mode; for a shared lease, one of
// the session's shared holds of the key), or, when the lock is handed to the
// next goroutine of the process (see below), a check that the same backend
// still answers. A session lock can end only with an unlock or with its
// session, so an answer from the same backend proves it was held throughout.
//
// Otherwise Release returns an error and the connection is discarded
// (ending the session and whatever it held): an error wrapping ErrLockLost
// when the session was found gone or no longer holding a key (the lease is
// then lost: Lost is closed, AfterLost functions and the Lost hook run), or
// one wrapping context.DeadlineExceeded when the unlock was interrupted
// before it answered (held or not, nobody can say).
//
// If another goroutine of the process is queued for the key in exclusive
// mode, Release may hand the held lock, with its connection, straight to it
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
	ls.released = true  // no Tx begins from here on; a running one ends first
	ls.l.ka.unwatch(ls) // a no-op if no ping is scheduled
	ls.mu.Unlock()

	if !ls.takeConn() {
		// Lost while a ping or a Tx ran on the connection: the loss
		// discards it as soon as the driver lets go of it (a call stuck on
		// a silent network, which lib/pq cannot interrupt, must not hold
		// Release up).
		return ls.endLost()
	}
	// Nothing runs on the connection now, and whatever the last statement
	// found is recorded. A loss's discard waits for it to be given back.
	defer ls.giveConn()
	if ls.lossErr() != nil {
		return ls.endLost()
	}
	if ls.mayHandoff() {
		// The lock goes on without an unlock, so nothing else would find
		// that the session died after the lease's last statement: ask.
		if err := ls.ping(); err != nil {
			ls.loseHeld(fmt.Errorf("release: %w", err))
			return ls.endLost()
		}
		if ls.handoff() {
			ls.markReleased()
			// The connection goes on with the lock: it was never the
			// next lease's to wait for.
			if h := ls.l.opts.hooks.Released; h != nil {
				h(ls.keys[0], ls.shared, ls.held())
			}
			if ls.l.opts.logger != nil {
				ls.l.log(slog.LevelDebug, "advisory: lock handed to the next waiter", ls.keys, slog.Duration("held", ls.held()))
			}
			return nil
		}
	}
	bySocket := ls.sess.nc != nil
	rctx := ctx
	if ls.l.releaseDeadline && !bySocket {
		rctx = ls.l.relBound.context(ctx, ls.l.relTimeout)
	} else if ctx.Done() != nil {
		rctx = context.WithoutCancel(ctx)
	} // else ctx can never be cancelled: use it as it is, one allocation less
	if bySocket {
		// The keepalive sweep bounds this release (see netConnOf): it
		// interrupts the statement if it has not ended in time.
		ls.l.ka.watchRelease(ls, mono()+int64(ls.l.relTimeout))
	}
	failed := ls.l.unlock(rctx, ls.conn, ls.keys, ls.shared)
	// Interrupted, the connection must not go back to the pool, even if the
	// unlock ended just in time: the socket's deadline is set, or about to be.
	interrupted := bySocket && ls.l.ka.endRelease(ls)
	if failed != nil && !interrupted && !errors.Is(rctx.Err(), context.DeadlineExceeded) {
		// The session did not hold every key, or did not answer: whatever
		// the cause, the lock was not held until now.
		ls.loseHeld(failed)
		return ls.endLost()
	}
	if interrupted && failed != nil {
		failed = errorf("advisory: release %v: not done within %v: %w (%w)",
			keyArg(ls.keys), ls.l.relTimeout, context.DeadlineExceeded, unwrapOnce(failed))
	}
	ls.markReleased()
	// Forget the pid before the connection can go back to the pool: another
	// acquire may get it at once, and must not take it for a pooler's.
	ls.sess.be.unclaim()
	if failed != nil || interrupted {
		ls.l.discard(ls.conn)
	} else {
		ls.conn.Close()
	}
	ls.releaseTicket()
	if h := ls.l.opts.hooks.Released; h != nil {
		h(ls.keys[0], ls.shared, ls.held())
	}
	if failed != nil {
		ls.l.log(slog.LevelError, "advisory: release failed, connection discarded", ls.keys, slog.Any("error", failed))
		return failed
	}
	if ls.l.opts.logger != nil {
		ls.l.log(slog.LevelDebug, "advisory: lock released", ls.keys, slog.Duration("held", ls.held()))
	}
	return nil
}

// unwrapOnce returns what err wraps, without its own prefix (unlock's
// "advisory: release k:"), or err if it wraps nothing.
func unwrapOnce(err error) error {
	if inner := errors.Unwrap(err); inner != nil {
		return inner
	}
	return err
}

// takeConn waits until no statement runs on the lease's connection and
// takes it, or until the lease is lost; it reports whether it took it.
func (ls *Lease) takeConn() bool {
	select {
	case ls.connTok <- struct{}{}:
		return true
	default:
	}
	select {
	case ls.connTok <- struct{}{}:
		return true
	case <-ls.Lost():
		return false
	}
}

// giveConn gives back the connection that takeConn took.
func (ls *Lease) giveConn() { <-ls.connTok }

// markReleased records a release that found the lock held.
func (ls *Lease) markReleased() {
	ls.mu.Lock()
	ls.err = ErrReleased
	ls.onLost = nil
	ls.mu.Unlock()
}

// endLost ends the Release of a lost lease: the queue place goes back, and
// the loss error is the answer.
func (ls *Lease) endLost() error {
	ls.releaseTicket()
	return ls.lossErr()
}

// held returns how long the lease has held its lock.
func (ls *Lease) held() time.Duration { return time.Duration(mono() - ls.grant) }

// lossErrLocked is lossErr with ls.mu held.
func (ls *Lease) lossErrLocked() error {
	if ls.isLost {
		return ls.err
	}
	return nil
}

// releaseTicket gives the lease's place in the in-process queue back.
func (ls *Lease) releaseTicket() {
	if ls.ticket != nil {
		ls.ticket.Release()
		ls.ticket = nil
	}
}

// mayHandoff reports whether Release may hand the held lock on: the lease
// holds one key exclusively, in the process's queue, with someone queued
// behind it, within the fairness budget (WithHandoff).
func (ls *Lease) mayHandoff() bool {
	o := &ls.l.opts
	return ls.ticket != nil && !ls.shared && !o.fencing && ls.passes < o.handoffs &&
		ls.ticket.Waiting() > 0 && time.Duration(mono()-ls.serverGrant) < o.handoffWindow
}

// handoff passes the held server lock and its connection to the next
// goroutine of the process queued for the key in exclusive mode. It reports
// whether it did; the caller holds the connection (takeConn) and checked
// mayHandoff and the session, and the lease is not lost.
func (ls *Lease) handoff() bool {
	next := &Lease{
		l: ls.l, conn: ls.conn, keys: ls.keys, sess: ls.sess,
		serverGrant: ls.serverGrant, passes: ls.passes + 1,
		connTok: make(chan struct{}, 1),
	}
	if !ls.ticket.Handoff(next) {
		return false
	}
	ls.ticket = nil
	// The pid stays claimed: next holds it now. next.grant, its ticket and
	// its keepalive are set by the waiter (Locker.lockQueued).
	return true
}

// tick runs one keepalive ping, on a goroutine of its own started by the
// Locker's keepalive sweep, and schedules the next.
func (ls *Lease) tick() {
	ls.mu.Lock()
	stop := ls.released || ls.err != nil
	ls.mu.Unlock()
	if stop {
		return
	}
	select {
	case ls.connTok <- struct{}{}:
	default:
		// A Tx or a Release has the connection: the keepalive must not send
		// a statement inside a transaction, and the Tx's own statements
		// watch the session meanwhile.
		ls.mu.Lock()
		if !ls.released && ls.err == nil {
			ls.l.ka.watch(ls, mono(), ls.l.opts.keepAlive)
		}
		ls.mu.Unlock()
		return
	}

	// The verdict timer declares the lease lost if the driver has not
	// returned in time, even while the call below is stuck.
	judged := make(chan struct{})
	verdict := time.AfterFunc(ls.l.pingTimeout+pingGrace, func() {
		ls.lose(fmt.Errorf("keepalive: no answer within %v: %w", ls.l.pingTimeout, context.DeadlineExceeded))
		close(judged)
	})
	err := ls.ping()
	if !verdict.Stop() {
		<-judged // the loss is recorded before the connection is given back
	} else if err != nil {
		ls.loseHeld(err)
	}
	ls.mu.Lock()
	if err == nil && !ls.released && ls.err == nil {
		ls.l.ka.watch(ls, mono(), ls.l.opts.keepAlive)
	}
	ls.mu.Unlock()
	// A Release waiting for the connection finds the verdict recorded.
	ls.giveConn()
}

// ping runs one keepalive round trip and checks that the same backend
// answers. The caller holds the connection (takeConn).
func (ls *Lease) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), ls.l.pingTimeout)
	defer cancel()
	var pid int
	if err := ls.conn.QueryRowContext(ctx, sqltext.Ping).Scan(&pid); err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	if pid != ls.sess.be.pid {
		return fmt.Errorf("keepalive answered by backend %d, lock taken by backend %d: %w", pid, ls.sess.be.pid, ErrPooler)
	}
	return nil
}

// lose marks the lease lost with cause, signals everyone, and discards the
// connection in the background, once whatever runs on it ends (a stuck ping
// returns).
func (ls *Lease) lose(cause error) {
	if ls.markLost(cause) {
		go func() {
			ls.connTok <- struct{}{} // never given back
			ls.drop(cause)
		}()
	}
}

// loseHeld is lose for a caller that holds the connection (takeConn): the
// connection is discarded before it returns.
func (ls *Lease) loseHeld(cause error) {
	if ls.markLost(cause) {
		ls.drop(cause)
	}
}

// markLost records the loss and signals it: Lost, AfterLost, the hook, the
// log. It reports whether the loss is new (a lease released or lost
// already is left as it is).
func (ls *Lease) markLost(cause error) bool {
	ls.mu.Lock()
	if ls.err != nil {
		ls.mu.Unlock()
		return false
	}
	err := errorf("advisory: lock %v: %w: %w", keyArg(ls.keys), ErrLockLost, cause)
	ls.err = err
	ls.isLost = true
	if ls.lost != nil {
		close(ls.lost)
	} else {
		ls.lost = closedChan
	}
	ls.l.ka.unwatch(ls) // a no-op if no ping is scheduled
	fns := ls.onLost
	ls.onLost = nil
	ls.mu.Unlock()

	for _, lf := range fns {
		go lf.f(err)
	}
	if h := ls.l.opts.hooks.Lost; h != nil {
		h(ls.keys[0], err)
	}
	ls.l.log(slog.LevelWarn, "advisory: lock lost", ls.keys, slog.Int("pid", ls.sess.be.pid), slog.Any("error", err))
	ls.sess.be.unclaim()
	return true
}

// drop discards the connection of a lost lease; the caller holds it.
func (ls *Lease) drop(cause error) {
	if errorsIsPooler(cause) {
		// Dropping the client connection does not end a pooled server
		// session: try to give the locks back first.
		ls.l.unlockBestEffort(ls.conn, ls.keys, ls.shared)
	}
	ls.l.discard(ls.conn)
}
