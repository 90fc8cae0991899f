package advisory

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// giveBackPause is the first pause between two rounds of unlockBestEffort;
// each round waits one more, up to giveBackMaxPause.
const (
	giveBackPause    = 10 * time.Millisecond
	giveBackMaxPause = 100 * time.Millisecond
)

// unlockBestEffort gives keys back before a discard that might not end the
// session that holds them: a pooler in transaction mode keeps its server
// sessions, with their locks, and sends each statement to a server session
// of its choosing. pids are the backends that may hold the keys.
//
// It works in rounds, within releaseTimeout: unlock each key still held (an
// unlock that lands on the holder frees it); then, if some unlock landed
// elsewhere, free the advisory locks of each of pids (sqltext.EndIdleBackend:
// all of them if the statement lands on it, else by ending it if it is
// idle). Through a transaction pooler no session lock can be trusted by any
// client, so these locks are garbage: freeing them interrupts no one. A
// round that could not free one of pids (it was in another client's
// transaction) is followed by another. When conn fails, the rest goes
// through a connection of the pool: behind a pooler every client
// connection reaches the same server sessions. The outcome is not reported:
// the caller has already lost or refused the lease.
func (l *Locker) unlockBestEffort(conn *sql.Conn, pids []int, keys []keyspace.Key, shared bool) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	left := keys
	alive := suspects(nil, pids...)
	pooled := false
	pause := giveBackPause
	for ctx.Err() == nil {
		var err error
		left, err = l.unlockEach(ctx, conn, left, shared)
		if err == nil && len(left) > 0 {
			alive, err = endIdle(ctx, conn, alive)
		}
		if len(left) == 0 || (err == nil && len(alive) == 0) {
			return
		}
		if err != nil {
			if pooled || ctx.Err() != nil {
				return
			}
			c, cerr := l.db.Conn(ctx)
			if cerr != nil {
				return
			}
			defer c.Close()
			conn, pooled = c, true
			continue
		}
		if !sleepCtx(ctx, pause) {
			return
		}
		pause = min(pause+giveBackPause, giveBackMaxPause)
	}
}

// endIdle runs sqltext.EndIdleBackend on conn for each of pids and returns
// those that still hold advisory locks (it could not free them), and the
// first error, which ends it.
func endIdle(ctx context.Context, conn *sql.Conn, pids []int) ([]int, error) {
	var alive []int
	for i, pid := range pids {
		var done bool
		if err := conn.QueryRowContext(ctx, sqltext.EndIdleBackend, pid).Scan(&done); err != nil {
			return append(alive, pids[i:]...), err
		}
		if !done {
			alive = append(alive, pid)
		}
	}
	return alive, nil
}

// unlockEach releases keys one at a time on conn and returns those that it
// did not find held (the unlock landed on another session), and the first
// error other than that, which ends it.
func (l *Locker) unlockEach(ctx context.Context, conn *sql.Conn, keys []keyspace.Key, shared bool) ([]keyspace.Key, error) {
	var left []keyspace.Key
	for i, k := range keys {
		err := l.unlock(ctx, conn, []keyspace.Key{k}, shared)
		switch {
		case errors.Is(err, ErrLockLost):
			left = append(left, k)
		case err != nil:
			return append(left, keys[i:]...), err
		}
	}
	return left, nil
}

// suspects returns pids (0s left out) and the backends that a backendChanged
// in err names: the server sessions of a pooler that may hold what the
// statements of a session took.
func suspects(err error, pids ...int) []int {
	var out []int
	add := func(pid int) {
		if pid != 0 && !slices.Contains(out, pid) {
			out = append(out, pid)
		}
	}
	for _, pid := range pids {
		add(pid)
	}
	if bc := (*backendChanged)(nil); errors.As(err, &bc) {
		add(bc.session)
		add(bc.answered)
	}
	return out
}

// suspects is the package's suspects for a session that ends with err: its
// own backend, if known, and those err names.
func (s *session) suspects(err error) []int {
	if s.ci == nil {
		return suspects(err)
	}
	return suspects(err, s.pid())
}
