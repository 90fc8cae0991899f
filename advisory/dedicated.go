package advisory

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// dedicated takes keys (sorted, distinct, at least one) on a session of
// their own: a connection pinned from the pool for this lease. It tries
// first, on a connection that it replaces if the connection turns out dead
// before anything was taken (after a server restart every idle connection
// of the pool is), then, unless try, waits on the server for what the try
// did not get, in the same order. Whatever happens, the connection goes
// back to the pool only if it certainly holds nothing.
//
// busy says that a multiplexed session just found the key held elsewhere
// (and the Contended hook ran).
func (l *Locker) dedicated(ctx context.Context, keys []keyspace.Key, shared, try, busy bool, timeout time.Duration) (*Lease, error) {
	slot := false
	if l.mux != nil {
		if err := l.mux.takeSlot(ctx); err != nil {
			return nil, err
		}
		slot = true
	}
	giveSlot := func() {
		if slot {
			l.mux.giveSlot()
		}
	}
	// The fenced statement of several keys gets its tokens with the whole
	// set: it cannot go in a try and a wait.
	tryFirst := try || !l.opts.fencing || len(keys) == 1
	var (
		s      *session
		held   int
		tokens []int64
		err    error
	)
	budget := 0
	for attempt := 0; ; attempt++ {
		s, err = l.openSession(ctx, false)
		if err != nil {
			giveSlot()
			return nil, err
		}
		if !tryFirst {
			break
		}
		held, tokens, err = s.acquireStmt(ctx, sqltext.Mode{Shared: shared, Try: true}, keys, 0)
		if err == nil || held > 0 || ctx.Err() != nil || !connBroken(err) || exhausted(&budget, attempt, l.retries) {
			break
		}
		// Dead before the try reached a server session: nothing was taken.
		s.close(true)
	}
	if err == nil && held < len(keys) {
		if (tryFirst && !busy) || try {
			l.contended(keys[0], shared)
		}
		if !try {
			var n int
			var more []int64
			l.obs.serverWait.Add(1)
			n, more, err = s.acquireStmt(ctx, sqltext.Mode{Shared: shared}, keys[held:], timeout)
			l.obs.serverWait.Add(-1)
			held += n
			tokens = append(tokens, more...)
			if err != nil && ctx.Err() == nil && connBroken(err) {
				// Not retried: the statement reached a session, which then
				// ended (an operator's pg_terminate_backend, a restart).
				err = fmt.Errorf("the session ended while it waited for the lock: %w", err)
			}
		}
	}
	if err == nil && held == 0 && try {
		// Refused before taking anything: the connection holds nothing.
		s.close(false)
		giveSlot()
		return nil, errBusy
	}
	if err == nil && held < len(keys) {
		err = errorf("advisory: server took %d of %d keys", held, len(keys))
	}
	if err == nil && ctx.Err() != nil {
		// The driver may have given up on the connection as the context
		// ended (lib/pq closes it): a lease on it would be dead on arrival.
		err = ctx.Err()
	}
	if err == nil && !s.claim() {
		// Another live session already sits on this backend: only a pooler
		// can do that. What this acquire took is given back below, then
		// the connection dropped.
		err = errorf("advisory: backend %d already holds another session: %w", s.pid(), ErrPooler)
	}
	if err == nil && l.opts.fencing && len(tokens) != len(keys) {
		err = errorf("advisory: no fencing token from the server")
	}
	if errors.Is(err, ErrPooler) {
		// A statement of this acquire landed on another server session of
		// a pooler, which may hold what it took; closing the client
		// connection would not end it.
		l.unlockBestEffort(s.conn, s.suspects(err), keys, shared)
	}
	if err != nil {
		// In doubt, thrown away: also a wait that lock_timeout ended (55P03).
		// The server may grant the lock as the timeout fires and still fail
		// the statement, and a session lock outlives its failed statement:
		// back in the pool, the connection would hold the key with no lease
		// to release it.
		s.close(true)
		giveSlot()
		return nil, err
	}
	s.slot = slot
	ls := newLease(l, s, keys, shared, tokens)
	s.attach(ls)
	s.answered()
	l.ka.watch(s, mono(), l.opts.keepAlive)
	return ls, nil
}

// retries bounds how many connections an acquire replaces that turn out
// dead before its first statement got through: one for each the pool has.
func (l *Locker) retries() int { return l.db.Stats().OpenConnections + 1 }

// exhausted reports whether an acquire that has met attempt dead
// connections has used up its budget of retries. The budget is fixed when
// the first is met (*budget is 0 until then): the pool's count drops as dead
// connections are closed, by this acquire and by others at the same time,
// and after a server restart a budget read anew each time would run out
// while the pool still holds dead connections.
func exhausted(budget *int, attempt int, retries func() int) bool {
	if *budget == 0 {
		*budget = retries()
	}
	return attempt >= *budget
}

// openSession pins a connection of the pool for a session. A connection new
// to the Locker first gets the dead-peer settings (tune), which also names
// its backend; otherwise a multiplexed session learns its backend at once,
// a dedicated one from its first statement unless the connection's backend
// is known. A connection found dead before anything was sent on it is
// replaced.
func (l *Locker) openSession(ctx context.Context, mux bool) (*session, error) {
	budget := 0
	for attempt := 0; ; attempt++ {
		conn, err := l.db.Conn(ctx)
		if err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			// Ended while waiting for the connection: nothing was sent on it.
			conn.Close()
			return nil, err
		}
		s := l.newSession(conn, nil, nil, mux)
		if l.backends.perConn {
			s.dc = driverConn(conn)
			s.ci = l.backends.ofConn(s.dc)
		}
		tuned, err := s.tune(ctx)
		if err == nil && !mux {
			return s, nil
		}
		if err == nil && !tuned {
			err = s.learn(ctx)
		}
		if err == nil && mux && !s.claim() {
			err = errorf("advisory: backend %d already holds another session: %w", s.pid(), ErrPooler)
		}
		if err == nil {
			return s, nil
		}
		s.close(true)
		if ctx.Err() != nil || !connBroken(err) || exhausted(&budget, attempt, l.retries) {
			return nil, err
		}
	}
}

// learn asks the session's backend pid.
func (s *session) learn(ctx context.Context) error {
	var pid int
	if err := s.conn.QueryRowContext(ctx, sqltext.Ping).Scan(&pid); err != nil {
		return err
	}
	s.ci = s.l.backends.learn(s.dc, pid)
	return nil
}

// connBroken reports whether err says that the connection, or the server
// session behind it, is gone: an acquire that met it before taking anything
// may try again on another connection.
func connBroken(err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.As(err, &ne) && !ne.Timeout():
		return true
	}
	switch pgerr.SQLState(err) {
	case pgerr.AdminShutdown, pgerr.CrashShutdown:
		return true
	}
	return false
}

// acquireStmt runs one acquire statement for keys on the session and
// returns how many of keys (a prefix) the session now holds, and with
// fencing the tokens of keys once all are held. A try of one key on a
// session whose backend is known goes as sqltext.LockExec, with Exec (the
// rows affected say whether it was taken): the common case, a free key,
// costs the driver and the server no result set. Anything else (a wait,
// several keys, fencing, an unknown backend) goes as a query that also
// names the backend, which is learnt.
func (s *session) acquireStmt(ctx context.Context, m sqltext.Mode, keys []keyspace.Key, timeout time.Duration) (int, []int64, error) {
	l := s.l
	if m.Try && s.ci != nil && len(keys) == 1 && !l.opts.fencing {
		q, args := sqltext.LockExec(l.style, m, keys[0], timeout)
		n, err := execCount(ctx, s.conn, q, args)
		switch {
		case err != nil:
			return 0, nil, err
		case n > 1:
			return 0, nil, errorf("advisory: lock %v: %d rows affected, want 0 or 1", keys[0], n)
		}
		return int(n), nil, nil
	}
	n, pid, tokens, err := l.query(ctx, s.conn, m, keys, timeout)
	if err != nil {
		return n, tokens, err
	}
	if s.ci == nil || s.ci.be.pid != pid {
		s.ci = l.backends.learn(s.dc, pid)
	}
	return n, tokens, nil
}

// execCount runs q with Exec and returns the rows it affected. It calls the
// driver's ExecerContext directly, inside a Conn.Raw, where the driver has
// one: database/sql's own work per statement (its locks, the conversion of
// the arguments, the wrapping of the result) is then done once, not twice.
// The arguments are integers and strings, which every driver takes as they
// are.
func execCount(ctx context.Context, conn *sql.Conn, q string, args []any) (int64, error) {
	var n int64
	direct := false
	err := conn.Raw(func(dc any) error {
		ec, isExecer := dc.(driver.ExecerContext)
		if !isExecer {
			return nil
		}
		nvs := make([]driver.NamedValue, len(args))
		for i, a := range args {
			nvs[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
		}
		res, err := ec.ExecContext(ctx, q, nvs)
		if errors.Is(err, driver.ErrSkip) {
			return nil
		}
		direct = true
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if direct || err != nil {
		return n, err
	}
	res, err := conn.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
