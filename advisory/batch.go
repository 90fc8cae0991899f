package advisory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/pgadvisory/pgadvisory/internal/fencing"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// op is one operation on a multiplexed session: a try or an unlock of one
// key for one lease, or a ping. The operations of many goroutines go to the
// server together, in one statement (a batch).
type op struct {
	kind  sqltext.OpKind
	ping  bool // a ping: answered by the batch's answer alone
	lease *Lease
	key   keyspace.Key
	done  chan struct{}
	ok    bool  // the function's answer
	token int64 // a granted try's fencing token, with WithFencing
	err   error // the session ended before the operation was answered
	sent  bool  // guarded by the session's mutex
}

// answer records the outcome of o and wakes its goroutine.
func (o *op) answer(ok bool, err error) {
	o.ok, o.err = ok, err
	close(o.done)
}

// submit runs o on the session, in the next batch, and waits for its
// answer. If the session is idle the caller sends the batch itself (one
// statement, no goroutine); otherwise o joins the operations that the
// sender takes next. A caller that sends while other operations are being
// submitted first yields its thread once (runtime.Gosched), as the sender
// does before each batch it drains: the goroutines that are ready to run
// (often those the last batch answered, sending their next operation) then
// join the batch instead of each sending one of their own. Against the
// best raw statement on as many connections this took the throughput of 64
// goroutines on 4 sessions from 1.6-2.1x to 3.2-4.2x (batches of 2.8
// operations became 10); a lone caller does not yield.
//
// An error means the session ended before o was answered: whatever o did
// died with it. If ctx ends before o is sent, o is
// withdrawn and ctx's error returned; once sent, its answer is waited for
// (the keepalive sweep bounds the statement).
func (s *session) submit(ctx context.Context, o *op) error {
	o.done = make(chan struct{})
	m := s.l.mux
	m.active.Add(1)
	defer m.active.Add(-1)
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return err
	}
	s.pending = append(s.pending, o)
	lead := !s.sending
	s.sending = true
	s.mu.Unlock()
	if lead {
		if m.active.Load() > 1 {
			// Other goroutines of the process send operations too: let
			// those ready to run join this batch before it goes.
			runtime.Gosched()
		}
		if s.tryTake() {
			s.sendAndPass()
		} else {
			// A Tx or a ping has the connection: a goroutine waits for it,
			// so that no caller's wait holds up the others'.
			go s.drain()
		}
	}
	select {
	case <-o.done:
		return o.err
	case <-ctx.Done():
	}
	s.mu.Lock()
	if !o.sent && s.withdrawLocked(o) {
		s.mu.Unlock()
		return ctx.Err()
	}
	s.mu.Unlock()
	<-o.done
	return o.err
}

// withdrawLocked takes o out of the pending operations; false if it is not
// there (sent, or answered by a loss).
func (s *session) withdrawLocked(o *op) bool {
	for i, p := range s.pending {
		if p == o {
			s.pending = append(s.pending[:i], s.pending[i+1:]...)
			return true
		}
	}
	return false
}

// sendAndPass sends one batch (the caller holds the connection, and gives
// it back), then leaves whatever arrived meanwhile to a goroutine: a
// caller sends at most one batch, however busy the session.
func (s *session) sendAndPass() {
	s.sendBatch()
	s.give()
	s.mu.Lock()
	more := len(s.pending) > 0 && s.err == nil
	if !more {
		s.sending = false
	}
	s.mu.Unlock()
	if more {
		go s.drain()
	}
}

// drain sends batches until no operation is pending.
func (s *session) drain() {
	for {
		// The goroutines that the last batch answered are ready to run,
		// and many send their next operation at once: let them join.
		runtime.Gosched()
		if !s.take() {
			return // ended: the loss answered every pending operation
		}
		s.sendBatch()
		s.give()
		s.mu.Lock()
		if len(s.pending) == 0 || s.err != nil {
			s.sending = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
}

// sendBatch sends the pending operations in one statement and answers each.
// The caller holds the connection. If the statement fails, or an unlock
// finds a key that the session should hold not held (its state is no longer
// what its leases say), the session is lost, and with it every lease on it.
func (s *session) sendBatch() {
	s.mu.Lock()
	batch := s.pending
	s.pending = nil
	for _, o := range batch {
		o.sent = true
	}
	ended := s.err
	s.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	if ended != nil {
		for _, o := range batch {
			o.answer(false, ended)
		}
		return
	}
	s.l.ka.watchStmt(s, mono()+int64(s.l.pingTimeout))
	results, err := s.runBatch(batch)
	overdue := s.l.ka.endStmt(s)
	if err == nil && overdue {
		err = fmt.Errorf("batch: no answer within %v: %w", s.l.pingTimeout, context.DeadlineExceeded)
	}
	if err == nil {
		for i, o := range batch {
			if !o.ping && !isTry(o.kind) && !results[i] {
				err = fmt.Errorf("release %v: the session did not hold it: %w", o.key, ErrLockLost)
				break
			}
		}
	}
	if err != nil {
		s.loseHeld(err)
		for _, o := range batch {
			o.answer(false, err)
		}
		return
	}
	s.mu.Lock()
	s.lastOK = mono()
	for i, o := range batch {
		if o.lease != nil && results[i] && !isTry(o.kind) {
			// Released: off the session before anyone can lose it with it.
			s.detachLocked(o.lease)
		}
	}
	s.mu.Unlock()
	for i, o := range batch {
		o.answer(results[i], nil)
	}
}

// runBatch runs the statement of batch and returns each operation's answer
// (true for a ping that the same backend answered). One try or one unlock
// goes as the single-key statement, with Exec (less work for the server
// than the batch statement); several as sqltext.Batch, which also names
// the backend.
func (s *session) runBatch(batch []*op) ([]bool, error) {
	ops := make([]sqltext.Op, 0, len(batch))
	for _, o := range batch {
		if !o.ping {
			ops = append(ops, sqltext.Op{Kind: o.kind, Key: o.key})
		}
	}
	results := make([]bool, len(batch))
	ctx := context.Background()
	// A fenced batch's statement never waits on the server, but resolving
	// a draw may (the fencing table): that part is bounded by the
	// keepalive's bound, which the sweep enforces through the socket where
	// it can, and a context elsewhere (lib/pq asks the server to cancel);
	// past it the session counts as lost either way. The statement itself
	// goes with ctx, which cannot be cancelled: a context with a deadline
	// would cost a watching goroutine in database/sql and in the driver on
	// every batch.
	fenced := s.l.opts.fencing && slices.ContainsFunc(ops, func(o sqltext.Op) bool { return isTry(o.Kind) })
	if len(ops) > 0 {
		s.l.obs.batches.Add(1)
		s.l.obs.batchedOps.Add(int64(len(ops)))
	}
	switch {
	case len(ops) == 0:
		if err := s.ping(s.l.pingTimeout); err != nil {
			return nil, err
		}
	case fenced && len(batch) == 1:
		ok, err := s.fencedTry(ctx, batch[0])
		results[0] = ok
		return results, err
	case len(ops) == 1 && len(batch) == 1:
		o := batch[0]
		var q string
		var args []any
		switch o.kind {
		case sqltext.OpTryLock, sqltext.OpTryLockShared:
			q, args = sqltext.LockExec(s.l.style, sqltext.Mode{Try: true, Shared: o.kind == sqltext.OpTryLockShared}, o.key, 0)
		default:
			q, args = sqltext.Unlock(s.l.style, o.kind == sqltext.OpUnlockShared, o.key)
		}
		n, err := execCount(ctx, s.conn, q, args)
		if err != nil {
			return nil, err
		}
		if n > 1 {
			return nil, fmt.Errorf("%v: %d rows affected, want 0 or 1", o.key, n)
		}
		results[0] = n == 1
		return results, nil
	default:
		var pid int
		var answers string
		var draws, cache sql.NullString
		var err error
		if fenced {
			err = s.batchRow(ctx, ops, true).Scan(&pid, &answers, &draws, &cache)
		} else {
			err = s.batchRow(ctx, ops, false).Scan(&pid, &answers)
		}
		if err != nil {
			if fenced {
				ctx, cancel := context.WithTimeout(ctx, s.l.pingTimeout)
				defer cancel()
				err = fencing.Diagnose(ctx, s.conn, s.l.opts.fenceTable, err)
			}
			return nil, err
		}
		changed := pid != s.pid()
		if len(answers) != len(ops) {
			if changed {
				return nil, &backendChanged{stmt: "batch", answered: pid, session: s.pid()}
			}
			return nil, errors.New("batch: " + strconv.Itoa(len(answers)) + " answers for " + strconv.Itoa(len(ops)) + " operations")
		}
		j := 0
		for i, o := range batch {
			if o.ping {
				results[i] = true
				continue
			}
			results[i] = answers[j] == '1'
			j++
		}
		if changed {
			s.giveBackTries(pid, batch, results)
			return nil, &backendChanged{stmt: "batch", answered: pid, session: s.pid()}
		}
		if fenced {
			if err := s.tokens(ctx, batch, len(ops), results, draws.String, cache.String); err != nil {
				return nil, err
			}
		}
		return results, nil
	}
	for i := range results {
		results[i] = true
	}
	return results, nil
}

// giveBackTries gives back the keys that the tries of batch took (results)
// on backend pid, which answered it instead of the session's backend (a
// pooler).
func (s *session) giveBackTries(pid int, batch []*op, results []bool) {
	var taken [2][]keyspace.Key // by mode: exclusive, shared
	for i, o := range batch {
		if results[i] && !o.ping && isTry(o.kind) {
			sh := b2i(o.kind == sqltext.OpTryLockShared)
			taken[sh] = append(taken[sh], o.key)
		}
	}
	for sh, keys := range taken {
		if len(keys) > 0 {
			s.l.unlockBestEffort(s.conn, []int{pid}, keys, sh == 1)
		}
	}
}

// batchRow runs the batch statement of ops on the session. Drivers of the
// Params style send it with its arrays as parameters (pgx keeps it
// prepared). Drivers of the Inline style (lib/pq) would pay a second round
// trip for parameters, or the server a parse and plan of the whole text per
// batch for arrays written into it; a statement prepared once per session
// costs neither: lib/pq runs a prepared statement in one round trip.
func (s *session) batchRow(ctx context.Context, ops []sqltext.Op, fenced bool) *sql.Row {
	build := func(style sqltext.Style) (string, []any) {
		if fenced {
			return sqltext.BatchFenced(style, ops, s.l.opts.fenceTable)
		}
		return sqltext.Batch(style, ops)
	}
	if s.l.style != sqltext.Inline {
		q, args := build(s.l.style)
		return s.conn.QueryRowContext(ctx, q, args...)
	}
	q, args := build(sqltext.Params)
	if stmt := preparedOn(ctx, s.conn, &s.batchStmt[b2i(fenced)], q); stmt != nil {
		return stmt.QueryRowContext(ctx, args...)
	}
	// Run unprepared: the error, if it is the session's, shows there.
	q, args = build(s.l.style)
	return s.conn.QueryRowContext(ctx, q, args...)
}

// preparedOn returns q prepared through the driver on conn, kept in *slot
// from the first call on (a multiplexed session's statements live as long
// as its connection), or nil if preparing it failed: the caller then runs q
// another way, where the error, if it is the session's, shows.
func preparedOn(ctx context.Context, conn *sql.Conn, slot **sql.Stmt, q string) *sql.Stmt {
	if *slot == nil {
		if p, err := conn.PrepareContext(ctx, q); err == nil {
			*slot = p
		}
	}
	return *slot
}

// isTry reports whether k is a try (which a fenced batch draws a token
// for); the other kinds are unlocks.
func isTry(k sqltext.OpKind) bool { return k == sqltext.OpTryLock || k == sqltext.OpTryLockShared }

// b2i is 1 for true, 0 for false.
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fencedTry runs one fenced try on its own, as the fenced acquire of a
// dedicated session (Locker.queryFenced): the draw, and its resolution when
// the session's cache of the epoch does not cover it. It reports whether
// the try took the key.
func (s *session) fencedTry(ctx context.Context, o *op) (bool, error) {
	m := sqltext.Mode{Try: true, Shared: o.kind == sqltext.OpTryLockShared}
	keys := [1]keyspace.Key{o.key}
	n, pid, token, err := s.l.queryFenced(ctx, s.conn, &s.tryStmt[b2i(m.Shared)][b2i(o.key.IsPair())], m, keys[:], 0, s.l.pingTimeout)
	if err == nil && pid != s.pid() {
		err = &backendChanged{stmt: "fenced try", answered: pid, session: s.pid()}
	}
	switch {
	case errors.Is(err, ErrPooler):
		// The try may have taken the key on another server session of the
		// pooler than the session's: give it back there.
		s.l.unlockBestEffort(s.conn, suspects(err, pid), keys[:], m.Shared)
		return false, err
	case err != nil:
		return false, err
	case n == 1:
		o.token = token
		return true, nil
	}
	return false, nil
}

// tokens turns the draws of a fenced batch (BatchFenced's draws, one field
// for each of its nops operations that are not pings) into the tokens of
// its granted tries: from the session's cache of the epoch, else resolved
// on the session, whose cache then holds the epoch for the next draws.
func (s *session) tokens(ctx context.Context, batch []*op, nops int, results []bool, draws, cache string) error {
	fields := strings.Split(draws, ",")
	if len(fields) != nops {
		return fmt.Errorf("fenced batch: %d draws for %d operations", len(fields), nops)
	}
	j := 0
	for i, o := range batch {
		if o.ping {
			continue
		}
		f := fields[j]
		j++
		if !results[i] || !isTry(o.kind) {
			continue
		}
		d, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return fmt.Errorf("fenced batch: no fencing draw for %v in %q", o.key, draws)
		}
		if t, ok := fencing.FromCache(cache, d); ok {
			o.token = t
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, s.l.pingTimeout)
		t, c, err := s.l.resolveDraw(rctx, s.conn, s.pid(), d)
		cancel()
		if err != nil {
			return fmt.Errorf("lock %v: fencing token: %w", o.key, err)
		}
		o.token, cache = t, c
	}
	return nil
}
