package advisory

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// pingGrace is how long the keepalive waits past a ping's own timeout for
// the driver to return; after that the ping counts as unanswered even if the
// driver call is still stuck (lib/pq cannot interrupt a read on a silent
// network).
const pingGrace = 100 * time.Millisecond

// Lease is one held lock (or, from LockAll, one set of locks) on its own
// pinned connection. Every method is safe for concurrent use, and Release is
// nil-safe. A Lease must be released even after it was lost, to stop its
// keepalive.
type Lease struct {
	l      *Locker
	conn   *sql.Conn
	keys   []keyspace.Key
	shared bool
	pid    int
	grant  time.Time
	tokens []int64 // fencing tokens, in the order of keys; nil without fencing

	// connMu serialises statements on conn (keepalive pings, release); a
	// ping whose driver call hangs keeps it until the call returns.
	connMu sync.Mutex

	lost   chan struct{} // closed on loss
	stop   chan struct{} // closed by Release to end the keepalive
	kaDone chan struct{} // closed when the keepalive goroutine has ended

	relMu sync.Mutex // serialises Release calls

	mu       sync.Mutex
	err      error // nil while held, then the loss error or ErrReleased
	released bool
	onLost   []func(error)
}

func newLease(l *Locker, conn *sql.Conn, keys []keyspace.Key, shared bool, pid int, tokens []int64) *Lease {
	ls := &Lease{
		l: l, conn: conn, keys: keys, shared: shared, pid: pid, grant: time.Now(), tokens: tokens,
		lost: make(chan struct{}), stop: make(chan struct{}), kaDone: make(chan struct{}),
	}
	go ls.keepalive()
	return ls
}

// Key returns the lease's key; for a LockAll lease, the first in sorted order.
func (ls *Lease) Key() keyspace.Key { return ls.keys[0] }

// Keys returns every key of the lease in sorted order (a copy).
func (ls *Lease) Keys() []keyspace.Key { return slices.Clone(ls.keys) }

// Shared reports whether the lease holds its key in shared mode.
func (ls *Lease) Shared() bool { return ls.shared }

// PID returns the server backend pid that holds the lock, as pg_locks and
// pg_stat_activity show it.
func (ls *Lease) PID() int { return ls.pid }

// Lost returns a channel that is closed when the lock is lost (not when it
// is released).
func (ls *Lease) Lost() <-chan struct{} { return ls.lost }

// Err returns nil while the lock is held; after a loss, an error wrapping
// ErrLockLost and the cause (ErrPooler, the driver's error, or
// context.DeadlineExceeded for an unanswered keepalive), also after Release;
// after the Release of a lease that was not lost, ErrReleased.
func (ls *Lease) Err() error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.err
}

// Release unlocks and returns the connection to the pool. It runs under
// context.WithoutCancel(ctx) with its own timeout of a few seconds, so a
// cancelled ctx still releases; it waits for a running Tx to end. If the
// unlock fails or reports that the session did not hold every key, the
// connection is discarded (ending the session and whatever it held) and the
// error says so (wrapping ErrLockLost for a key that was not held).
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
		return fmt.Errorf("advisory: release %v: %w", keyArg(ls.keys), ErrReleased)
	}
	ls.released = true
	ls.mu.Unlock()

	close(ls.stop)
	<-ls.kaDone // at most one ping timeout: the keepalive never waits longer

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()

	ls.mu.Lock()
	lostErr := ls.err
	if lostErr == nil {
		ls.err = ErrReleased
	}
	ls.mu.Unlock()
	if lostErr != nil {
		// The loss already started discarding the connection, which ends as
		// soon as the driver lets go of it: a call stuck on a silent network
		// (lib/pq cannot interrupt one) must not hold Release up.
		return lostErr
	}

	ls.connMu.Lock()
	defer ls.connMu.Unlock()
	failed := ls.l.unlock(rctx, ls.conn, ls.keys, ls.shared)
	if failed != nil {
		ls.l.discard(ls.conn)
	} else {
		ls.conn.Close()
	}
	ls.l.releasePID(ls.pid)
	held := time.Since(ls.grant)
	if h := ls.l.opts.hooks.Released; h != nil {
		h(ls.keys[0], ls.shared, held)
	}
	if failed != nil {
		ls.l.log(slog.LevelError, "advisory: release failed, connection discarded", ls.keys, slog.Any("error", failed))
		return failed
	}
	ls.l.log(slog.LevelDebug, "advisory: lock released", ls.keys, slog.Duration("held", held))
	return nil
}

// keepalive pings the connection every interval until Release or a loss.
func (ls *Lease) keepalive() {
	defer close(ls.kaDone)
	t := time.NewTicker(ls.l.opts.keepAlive)
	defer t.Stop()
	for {
		select {
		case <-ls.stop:
			return
		case <-t.C:
		}
		if err := ls.ping(); err != nil {
			ls.lose(err)
			return
		}
	}
}

// ping runs one keepalive round trip and checks that the same backend
// answers. The driver call runs on its own goroutine so that a call stuck on
// a silent network cannot hold the verdict back past the ping timeout.
func (ls *Lease) ping() error {
	if !ls.connMu.TryLock() {
		// A Tx is running on the connection: the keepalive must not send a
		// statement inside it, and the Tx's own statements watch the
		// session meanwhile.
		return nil
	}
	// connMu is released by the goroutine when the driver call returns.
	ctx, cancel := context.WithTimeout(context.Background(), ls.l.pingTimeout)
	defer cancel()
	type result struct {
		pid int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		defer ls.connMu.Unlock()
		var pid int
		err := ls.conn.QueryRowContext(ctx, sqltext.Ping).Scan(&pid)
		ch <- result{pid, err}
	}()
	timer := time.NewTimer(ls.l.pingTimeout + pingGrace)
	defer timer.Stop()
	select {
	case r := <-ch:
		switch {
		case r.err != nil:
			return fmt.Errorf("keepalive: %w", r.err)
		case r.pid != ls.pid:
			return fmt.Errorf("keepalive answered by backend %d, lock taken by backend %d: %w", r.pid, ls.pid, ErrPooler)
		}
		return nil
	case <-timer.C:
		return fmt.Errorf("keepalive: no answer within %v: %w", ls.l.pingTimeout, context.DeadlineExceeded)
	}
}

// lose marks the lease lost with cause, signals everyone, and discards the
// connection in the background (after any stuck ping returns).
func (ls *Lease) lose(cause error) {
	ls.mu.Lock()
	if ls.err != nil {
		ls.mu.Unlock()
		return
	}
	err := fmt.Errorf("advisory: lock %v lost: %w: %w", keyArg(ls.keys), ErrLockLost, cause)
	ls.err = err
	close(ls.lost)
	fns := ls.onLost
	ls.onLost = nil
	ls.mu.Unlock()

	for _, f := range fns {
		f(err)
	}
	if h := ls.l.opts.hooks.Lost; h != nil {
		h(ls.keys[0], err)
	}
	ls.l.log(slog.LevelWarn, "advisory: lock lost", ls.keys, slog.Int("pid", ls.pid), slog.Any("error", err))
	ls.l.releasePID(ls.pid)
	go func() {
		ls.connMu.Lock()
		defer ls.connMu.Unlock()
		if errorsIsPooler(cause) {
			// Dropping the client connection does not end a pooled server
			// session: try to give the locks back first.
			ls.l.unlockBestEffort(ls.conn, ls.keys, ls.shared)
		}
		ls.l.discard(ls.conn)
	}()
}

// onLoss calls f with the loss error when the lease is lost, at once if it
// already is. f must not block.
func (ls *Lease) onLoss(f func(error)) {
	ls.mu.Lock()
	select {
	case <-ls.lost:
		err := ls.err
		ls.mu.Unlock()
		f(err)
		return
	default:
	}
	ls.onLost = append(ls.onLost, f)
	ls.mu.Unlock()
}
