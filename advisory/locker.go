package advisory

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/keyqueue"
	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Locker takes session-level advisory locks from a *sql.DB. Its leases live
// on server sessions of two kinds (see the package documentation):
// multiplexed sessions, a few connections that carry many leases each, the
// default; or dedicated ones, a connection of the pool per lease
// (WithDedicatedSessions). A Locker is safe for concurrent use.
type Locker struct {
	db    *sql.DB
	style sqltext.Style
	opts  options

	// mux is the multiplexed sessions; nil when every lease gets a
	// dedicated session.
	mux *muxSet
	// idleAfter is how long a multiplexed session without leases keeps its
	// connection before it goes back to the pool.
	idleAfter time.Duration

	// releaseDeadline is whether a dedicated session's Release bounds its
	// unlock with a timeout: only where the driver can enforce one
	// (sqltext.DeadlineInterrupts).
	releaseDeadline bool
	relBound        releaseBound
	relTimeout      time.Duration // releaseTimeout; shorter in some tests
	// ka schedules the keepalive pings of every session.
	ka keepalives
	// backends knows the backend of each pid with a live session and, when
	// the driver keeps one backend per connection (sqltext.KeepsBackend),
	// of each connection, so that a lock on a known connection can skip
	// asking for the pid.
	backends backends

	// pingTimeout bounds one keepalive round trip.
	pingTimeout time.Duration

	// deadPeerSQL sets the dead-peer bound on a connection (tune); "" for
	// none. deadPeerOff turns it off after the server refused it.
	deadPeerSQL  string
	deadPeerOff  atomic.Bool
	deadPeerWarn sync.Once

	// q queues the goroutines of this process per key, so that of those
	// that want one key only the first goes to the server (LockAll bypasses
	// it: the server alone orders multi-key sets).
	q keyqueue.Queue[keyspace.Key]

	obs observer // counters for Stats
}

// New returns a Locker over db. A nil db gives a Locker whose methods return
// ErrNilDB. It panics on options that contradict each other
// (WithSessions with WithDedicatedSessions).
func New(db *sql.DB, opts ...Option) *Locker {
	l := &Locker{db: db, relTimeout: releaseTimeout, opts: options{
		keepAlive: DefaultKeepAlive, handoffs: DefaultHandoffs, handoffWindow: DefaultHandoffWindow,
	}}
	for _, o := range opts {
		if o != nil {
			o(&l.opts)
		}
	}
	l.q.OnWait = l.opts.hooks.Queued
	if l.opts.dedicated && (l.opts.sessions > 0 || l.opts.waiting > 0) {
		panic("advisory: WithDedicatedSessions with WithSessions or WithWaiting")
	}
	if db != nil {
		d := db.Driver()
		l.style = sqltext.StyleOf(d)
		l.releaseDeadline = sqltext.DeadlineInterrupts(d)
		l.backends.perConn = sqltext.KeepsBackend(d)
		l.backends.sockets = sqltext.ExposesSocket(d)
		if l.backends.perConn {
			l.deadPeerSQL = deadPeerStatement(&l.opts)
		}
		if l.multiplexed() {
			l.mux = &muxSet{l: l}
		}
	}
	l.pingTimeout = min(max(l.opts.keepAlive, 250*time.Millisecond), 900*time.Millisecond)
	l.idleAfter = min(max(l.opts.keepAlive, 100*time.Millisecond), time.Second)
	l.ka.period = sweepPeriod(l.opts.keepAlive)
	return l
}

// multiplexed reports whether the Locker's single-key leases go on
// multiplexed sessions: unless asked for dedicated ones, and as long as the
// driver keeps one backend per connection (sqltext.KeepsBackend: lib/pq and
// pgx; a session shared by many leases must be the same server session for
// each of its statements). With fencing, the tries of a batch draw their
// tokens in the batch's statement (sqltext.BatchFenced).
func (l *Locker) multiplexed() bool {
	switch {
	case l.opts.dedicated:
		return false
	case l.opts.sessions > 0:
		return true
	}
	return l.backends.perConn
}

// Lock takes key exclusively, waiting until it is free, the context ends, or
// the lock_timeout of WithLockTimeout runs out (ErrLockTimeout). If the
// context ends first the error wraps the context's error and nothing is left
// held. The caller must Release the lease.
func (l *Locker) Lock(ctx context.Context, key keyspace.Key) (*Lease, error) {
	return l.lockQueued(ctx, key, false, false)
}

// TryLock takes key exclusively if no other session holds it, without
// waiting. It returns an error wrapping ErrNotAcquired if another session
// holds key (in either mode), also when that session is another lease of
// this Locker (found in memory, without a round trip).
func (l *Locker) TryLock(ctx context.Context, key keyspace.Key) (*Lease, error) {
	return l.lockQueued(ctx, key, false, true)
}

// LockShared takes key in shared mode, waiting while an exclusive holder has
// it; shared holders do not exclude each other. Otherwise as Lock.
func (l *Locker) LockShared(ctx context.Context, key keyspace.Key) (*Lease, error) {
	return l.lockQueued(ctx, key, true, false)
}

// TryLockShared takes key in shared mode if no session holds it
// exclusively, without waiting; otherwise the error wraps ErrNotAcquired.
func (l *Locker) TryLockShared(ctx context.Context, key keyspace.Key) (*Lease, error) {
	return l.lockQueued(ctx, key, true, true)
}

// LockAll takes every key exclusively on one connection, in one round trip,
// all or nothing. The keys are sorted (keyspace.Compare) and de-duplicated
// first, so callers that lock overlapping sets in any order cannot deadlock
// each other. Waits and errors are as for Lock; on an error none of the keys
// is left held. The lease's Key is the first key in sorted order.
//
// LockAll does not queue in the process's memory as Lock does: every call
// waits on the server with a connection of its own, and its keys may be
// granted to it there ahead of goroutines of the process queued by Lock.
func (l *Locker) LockAll(ctx context.Context, keys ...keyspace.Key) (*Lease, error) {
	if len(keys) == 0 {
		return nil, ErrNoKeys
	}
	ks := slices.Clone(keys)
	slices.SortFunc(ks, keyspace.Compare)
	return l.acquireAll(ctx, slices.Compact(ks))
}

// lockObserved takes one key: first its place in the process's queue for the
// key (at once for a try, or failing fast if another lease of this Locker
// holds it incompatibly), then the server lock, unless the previous holder
// handed its held lock over. ob, if not nil, learns where it failed.
func (l *Locker) lockObserved(ctx context.Context, key keyspace.Key, shared, try bool, ob *acquireObs) (*Lease, error) {
	if l == nil || l.db == nil {
		return nil, ErrNilDB
	}
	keys := []keyspace.Key{key}
	if err := ctx.Err(); err != nil {
		return nil, l.fail(ctx, keys, err)
	}
	timeout := l.opts.lockTimeout
	var start int64 // for the queue's share of lock_timeout, the hook and the log
	if timeout > 0 || l.opts.hooks.Acquired != nil || l.opts.logger != nil {
		start = mono()
	}
	var t *keyqueue.Ticket[keyspace.Key]
	if try || l.opts.hooks.Contended != nil {
		var ok bool
		if shared {
			t, ok = l.q.TryLockShared(key)
		} else {
			t, ok = l.q.TryLock(key)
		}
		if !ok {
			if h := l.opts.hooks.Contended; h != nil {
				h(key, shared)
			}
			if try {
				return nil, errorf("advisory: lock %v: held by another lease of this process, %w", key, ErrNotAcquired)
			}
		}
	}
	if t == nil {
		var err error
		t, err = l.queue(ctx, key, shared)
		if err != nil {
			ob.queueFailed()
			return nil, err
		}
		if timeout > 0 {
			if waited := time.Duration(mono() - start).Truncate(time.Millisecond); waited > 0 {
				// The time spent in the queue counts against lock_timeout
				// (the server counts whole milliseconds).
				timeout = max(timeout-waited, time.Millisecond)
			}
		}
	}
	if next, ok := t.Value().(*Lease); ok {
		// The previous holder handed its server lock over.
		next.ticket = t
		next.grant = mono()
		l.obs.held.Add(1)
		if err := ctx.Err(); err != nil {
			// Ended just as the lock came: pass it on (or unlock it).
			_ = next.Release(ctx)
			return nil, l.fail(ctx, keys, err)
		}
		if h := l.opts.hooks.Acquired; h != nil {
			h(key, false, time.Duration(next.grant-start))
		}
		l.log(slog.LevelDebug, "advisory: lock handed over", keys, slog.Int("pid", next.PID()),
			slog.Duration("waited", time.Duration(next.grant-start)))
		return next, nil
	}
	ls, err := l.acquire(ctx, keys, shared, try, timeout)
	if err != nil {
		t.Release()
		return nil, err
	}
	ls.ticket = t
	return ls, nil
}

// queue waits for key's place in the process's queue, bounded by ctx and by
// WithLockTimeout.
func (l *Locker) queue(ctx context.Context, key keyspace.Key, shared bool) (*keyqueue.Ticket[keyspace.Key], error) {
	qctx := ctx
	if d := l.opts.lockTimeout; d > 0 {
		var cancel context.CancelFunc
		qctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	var t *keyqueue.Ticket[keyspace.Key]
	var err error
	if shared {
		t, err = l.q.LockShared(qctx, key)
	} else {
		t, err = l.q.Lock(qctx, key)
	}
	switch {
	case err == nil:
		return t, nil
	case ctx.Err() == nil && qctx.Err() != nil:
		return nil, errorf("advisory: lock %v: waited %v behind other leases of this process: %w",
			key, l.opts.lockTimeout, ErrLockTimeout)
	}
	return nil, l.fail(ctx, []keyspace.Key{key}, err)
}

// acquire takes keys (sorted, distinct, at least one): a single key on a
// multiplexed session if the Locker has them (a try, in the session's next
// batch), else, and when that try finds the key held elsewhere and the
// caller waits, on a dedicated session, which waits on the server.
func (l *Locker) acquire(ctx context.Context, keys []keyspace.Key, shared, try bool, timeout time.Duration) (*Lease, error) {
	if l == nil || l.db == nil {
		return nil, ErrNilDB
	}
	if l.opts.fenceErr != nil {
		return nil, l.opts.fenceErr
	}
	var start int64 // only for the hook and the log
	if l.opts.hooks.Acquired != nil || l.opts.logger != nil {
		start = mono()
	}
	if err := ctx.Err(); err != nil {
		return nil, l.fail(ctx, keys, err)
	}
	var ls *Lease
	var err error
	busy := false
	if l.mux != nil && len(keys) == 1 {
		ls, err = l.mux.tryLock(ctx, keys[0], shared)
		if busy = errors.Is(err, errBusy); busy {
			l.contended(keys[0], shared)
		}
	}
	if ls == nil && (err == nil || busy && !try) {
		ls, err = l.dedicated(ctx, keys, shared, try, busy, timeout)
	}
	if errors.Is(err, errBusy) {
		return nil, errorf("advisory: lock %v: held by another session, %w", keyArg(keys), ErrNotAcquired)
	}
	if err != nil {
		return nil, l.fail(ctx, keys, err)
	}
	l.obs.held.Add(1)
	if h := l.opts.hooks.Acquired; h != nil {
		h(keys[0], shared, time.Duration(ls.grant-start))
	}
	if l.opts.logger != nil {
		l.log(slog.LevelDebug, "advisory: lock acquired", keys, slog.Bool("shared", shared), slog.Int("pid", ls.PID()),
			slog.Duration("waited", time.Duration(ls.grant-start)))
	}
	return ls, nil
}

// contended runs the Contended hook, if set.
func (l *Locker) contended(key keyspace.Key, shared bool) {
	if h := l.opts.hooks.Contended; h != nil {
		h(key, shared)
	}
}

// query runs the acquire statement that answers with the backend pid: the
// first on a connection, and every fenced or multi-key one.
func (l *Locker) query(ctx context.Context, conn *sql.Conn, m sqltext.Mode, keys []keyspace.Key, timeout time.Duration) (int, int, []int64, error) {
	if l.opts.fencing {
		n, pid, t, err := l.queryFenced(ctx, conn, nil, m, keys, timeout, 0)
		if err != nil || n < len(keys) {
			return n, pid, nil, err
		}
		tokens := make([]int64, len(keys))
		for i := range tokens {
			tokens[i] = t
		}
		return n, pid, tokens, nil
	}
	var pid int
	if len(keys) == 1 {
		var ok bool
		q, args := sqltext.Lock(l.style, m, keys[0], timeout)
		if err := conn.QueryRowContext(ctx, q, args...).Scan(&ok, &pid); err != nil {
			return 0, 0, nil, err
		}
		if !ok {
			return 0, pid, nil, nil
		}
		return 1, pid, nil, nil
	}
	var n int64
	q, args := sqltext.LockAll(l.style, m, keys, timeout)
	if err := conn.QueryRowContext(ctx, q, args...).Scan(&n, &pid); err != nil {
		return 0, 0, nil, err
	}
	if n < 0 || n > int64(len(keys)) {
		return 0, pid, nil, errorf("advisory: server reported %d keys taken of %d", n, len(keys))
	}
	return int(n), pid, nil, nil
}

// fail builds the error of a failed acquire: the context's error when the
// context ended (so errors.Is(err, context.DeadlineExceeded) works whatever
// the driver reported), else the driver's error classified by SQLSTATE.
func (l *Locker) fail(ctx context.Context, keys []keyspace.Key, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return errorf("advisory: lock %v: %w (%w)", keyArg(keys), cerr, err)
	}
	return errorf("advisory: lock %v: %w", keyArg(keys), pgerr.Classify(err))
}

// discard throws conn away instead of returning it to the pool: returning
// driver.ErrBadConn from Raw makes database/sql close the driver connection,
// which ends the server session and with it every lock it holds.
func (l *Locker) discard(conn *sql.Conn) {
	err := conn.Raw(func(dc any) error {
		l.backends.forget(dc)
		if l.backends.sockets {
			endSession(dc)
		}
		return driver.ErrBadConn
	})
	_ = conn.Close() // already closed by Raw; this only marks it done
	if err != nil && !errors.Is(err, driver.ErrBadConn) && !errors.Is(err, sql.ErrConnDone) {
		l.log(slog.LevelError, "advisory: discarding a connection", nil, slog.Any("error", err))
	}
}

// unlock releases keys on conn in one round trip: sqltext.Unlock for one
// key, sqltext.UnlockMany for several. It fails, wrapping ErrLockLost, if the
// session did not hold every key.
func (l *Locker) unlock(ctx context.Context, conn *sql.Conn, keys []keyspace.Key, shared bool) error {
	if len(keys) == 1 {
		q, args := sqltext.Unlock(l.style, shared, keys[0])
		n, err := execCount(ctx, conn, q, args)
		switch {
		case err != nil:
			return errorf("advisory: release %v: %w", keys[0], err)
		case n != 1:
			return errorf("advisory: release %v: the session did not hold it: %w", keys[0], ErrLockLost)
		}
		return nil
	}
	var n int64
	q, args := sqltext.UnlockMany(l.style, shared, keys)
	if err := conn.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return errorf("advisory: release %v: %w", keyArg(keys), err)
	}
	if n != int64(len(keys)) {
		return errorf("advisory: release %v: the session held %d of the %d keys: %w", keyArg(keys), n, len(keys), ErrLockLost)
	}
	return nil
}

// log writes one record if a logger was given.
func (l *Locker) log(level slog.Level, msg string, keys []keyspace.Key, attrs ...slog.Attr) {
	lg := l.opts.logger
	if lg == nil || !lg.Enabled(context.Background(), level) {
		return
	}
	if keys != nil {
		attrs = append(attrs, slog.Any("key", keysValue(keys)))
	}
	lg.LogAttrs(context.Background(), level, msg, attrs...)
}

// keyArg formats keys for messages: the key alone, or the list.
type keyList []keyspace.Key

func keyArg(keys []keyspace.Key) keyList { return keyList(keys) }

func (k keyList) String() string {
	switch {
	case len(k) == 1:
		return k[0].String()
	case len(k) > maxKeysShown:
		// A LockAll of thousands of keys must not make a message of hundreds
		// of kilobytes: the first few say which set it was.
		return strings.TrimSuffix(fmt.Sprint([]keyspace.Key(k[:maxKeysShown])), "]") +
			" … " + strconv.Itoa(len(k)) + " keys]"
	}
	return fmt.Sprint([]keyspace.Key(k))
}

// maxKeysShown bounds the keys an error or log message lists.
const maxKeysShown = 8
