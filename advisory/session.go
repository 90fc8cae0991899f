package advisory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// session is one server session that leases live on: one connection pinned
// from the pool, and the backend it talks to.
//
// Two kinds share this type. A dedicated session is opened for one acquire
// (one key, or the keys of a LockAll), carries that lease (and the leases it
// is handed on to), and goes back to the pool when it is released. A
// multiplexed session (mux) is kept by the Locker's set and carries many
// leases at once; their tries and releases go to the server in batches
// (submit).
//
// Whatever the kind, the session owns its liveness: one keepalive per
// session, and a loss (a failed statement, a ping that is not answered, or
// answered by another backend) loses exactly the leases on it, at once.
type session struct {
	l    *Locker
	conn *sql.Conn
	dc   any       // conn's driver connection, where the driver keeps one backend per connection
	ci   *connInfo // backend and socket; nil until the first statement says
	mux  bool
	slot bool // holds one of the Locker's waiting slots, given back when the session ends

	// tok, a channel of one slot, is held by whoever sends statements on
	// conn: a ping, a Tx, a release or acquire of a dedicated session, a
	// batch of a multiplexed one, the discard after a loss. A ping whose
	// driver call hangs keeps it until the call returns. Unlike a mutex,
	// waiting for it ends when the session is lost (take).
	tok chan struct{}

	mu      sync.Mutex
	err     error         // why the session ended (its loss, or errClosed); nil while open
	ended   chan struct{} // closed when err is set
	claimed bool          // holds the claim of its backend
	head    *Lease        // live leases, linked through Lease.sPrev and Lease.sNext
	n       int           // how many
	pending []*op         // mux: operations waiting for the next batch
	sending bool          // mux: a batch is being sent, or about to be
	lastOK  int64         // mono: when a statement last answered
	idle    int64         // mux: when the last lease left (mono); 0 while leases are on it
	tries   int           // mux: tries between their submit and their lease's attach (or untry)

	batchStmt [2]*sql.Stmt    // mux, Inline style: the batch statements prepared on conn, [fenced] (batchRow)
	tryStmt   [2][2]*sql.Stmt // mux, Inline style: the lone fenced try prepared on conn, [shared][pair key] (fencedTry)

	kaLink
}

// errClosed is the end of a session that was given back to the pool.
var errClosed = errors.New("advisory: session closed")

// newSession returns a session on conn, whose backend is known if ci is not
// nil.
func (l *Locker) newSession(conn *sql.Conn, dc any, ci *connInfo, mux bool) *session {
	l.obs.sessions(mux).Add(1)
	return &session{l: l, conn: conn, dc: dc, ci: ci, mux: mux, tok: make(chan struct{}, 1), ended: make(chan struct{})}
}

// pid returns the session's backend pid.
func (s *session) pid() int { return s.ci.be.pid }

// take waits until no statement runs on the connection and takes it, or
// until the session ends; it reports whether it took it.
func (s *session) take() bool {
	select {
	case s.tok <- struct{}{}:
		return true
	default:
	}
	select {
	case s.tok <- struct{}{}:
		return true
	case <-s.ended:
		return false
	}
}

// tryTake takes the connection if no statement runs on it.
func (s *session) tryTake() bool {
	select {
	case s.tok <- struct{}{}:
		return true
	default:
		return false
	}
}

// give gives back the connection that take took.
func (s *session) give() { <-s.tok }

// endErr returns why the session ended, nil while it is open.
func (s *session) endErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// attach puts ls on the session; false if the session has ended (whatever
// it held is gone with it).
func (s *session) attach(ls *Lease) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return false
	}
	s.linkLocked(ls)
	return true
}

func (s *session) linkLocked(ls *Lease) {
	ls.sPrev, ls.sNext = nil, s.head
	if s.head != nil {
		s.head.sPrev = ls
	}
	s.head = ls
	s.n++
	s.idle = 0
}

// detachLocked takes ls off the session; s.mu is held and ls is on it.
func (s *session) detachLocked(ls *Lease) {
	if ls.sPrev != nil {
		ls.sPrev.sNext = ls.sNext
	} else {
		s.head = ls.sNext
	}
	if ls.sNext != nil {
		ls.sNext.sPrev = ls.sPrev
	}
	ls.sPrev, ls.sNext = nil, nil
	s.n--
	if s.n == 0 {
		s.idle = mono()
		if s.mux {
			// Back to the pool if no lease comes within idleAfter.
			s.l.ka.watch(s, s.idle, s.l.idleAfter)
		}
	}
}

// detach takes ls off the session if it is on it.
func (s *session) detach(ls *Lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil && (ls.sPrev != nil || s.head == ls) {
		s.detachLocked(ls)
	}
}

// handOn passes old's place on the session to next, together with the
// place in the process's queue (keyqueue Handoff), in one step under the
// session's mutex: a loss of the session then finds one or the other. It
// reports whether it did; false if the session ended or nobody took the
// handoff.
func (s *session) handOn(old, next *Lease) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || !old.ticket.Handoff(next) {
		return false
	}
	s.detachLocked(old)
	s.linkLocked(next)
	return true
}

// ping runs one keepalive round trip and checks that the same backend
// answers. The caller holds the connection.
func (s *session) ping(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var pid int
	if err := s.conn.QueryRowContext(ctx, sqltext.Ping).Scan(&pid); err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	if pid != s.pid() {
		return &backendChanged{stmt: "keepalive", answered: pid, session: s.pid()}
	}
	s.answered()
	return nil
}

// answered records that a statement on the session answered.
func (s *session) answered() {
	s.mu.Lock()
	s.lastOK = mono()
	s.mu.Unlock()
}

// check asks the session whether it is still the backend that took its
// locks, after a statement on it failed (what says which). If not, the
// session is lost and check returns the cause; nil if it is intact. The
// caller holds the connection.
func (s *session) check(what string) error {
	if err := s.endErr(); err != nil {
		return err
	}
	if err := s.ping(s.l.pingTimeout); err != nil {
		cause := fmt.Errorf("%s, and then: %w", what, err)
		s.loseHeld(cause)
		return cause
	}
	return nil
}

// tick runs one keepalive ping, on a goroutine of its own started by the
// Locker's keepalive sweep, and schedules the next. A multiplexed session
// that answered a batch within the interval needs no ping, and one that has
// carried no lease for a while goes back to the pool.
func (s *session) tick() {
	ka := s.l.opts.keepAlive
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	if s.mux && s.n == 0 {
		idleFor := time.Duration(mono() - s.idle)
		free := !s.sending && len(s.pending) == 0
		s.mu.Unlock()
		if free && idleFor >= s.l.idleAfter && s.l.mux.closeIdle(s) {
			return
		}
		s.l.ka.watch(s, mono(), s.l.idleAfter)
		return
	}
	if last := s.lastOK; s.mux && time.Duration(mono()-last) < ka {
		s.mu.Unlock()
		s.l.ka.watch(s, last, ka)
		return
	}
	s.mu.Unlock()
	if !s.tryTake() {
		// A Tx, a release or a batch has the connection: the keepalive must
		// not send a statement inside a transaction, and those statements
		// watch the session meanwhile.
		s.l.ka.watch(s, mono(), ka)
		return
	}
	// The verdict timer declares the session lost if the driver has not
	// returned in time, even while the call below is stuck.
	judged := make(chan struct{})
	verdict := time.AfterFunc(s.l.pingTimeout+pingGrace, func() {
		s.lose(fmt.Errorf("keepalive: no answer within %v: %w", s.l.pingTimeout, context.DeadlineExceeded))
		close(judged)
	})
	err := s.ping(s.l.pingTimeout)
	if !verdict.Stop() {
		<-judged // the loss is recorded before the connection is given back
	} else if err != nil {
		s.loseHeld(err)
	} else if s.endErr() == nil {
		s.l.ka.watch(s, mono(), ka)
	}
	// A Release waiting for the connection finds the verdict recorded.
	s.give()
}

// pingGrace is how long the keepalive waits past a ping's own timeout for
// the driver to return; after that the ping counts as unanswered even if the
// driver call is still stuck (lib/pq cannot interrupt a read on a silent
// network).
const pingGrace = 100 * time.Millisecond

// lose ends the session with cause: every lease on it is lost, every
// operation waiting for it fails, and the connection is discarded in the
// background once whatever runs on it ends (a stuck call returns).
func (s *session) lose(cause error) {
	if keys := s.markLost(cause); keys != nil {
		go func() {
			s.tok <- struct{}{} // never given back
			s.drop(cause, keys)
		}()
	}
}

// loseHeld is lose for a caller that holds the connection: it is discarded
// before loseHeld returns.
func (s *session) loseHeld(cause error) {
	if keys := s.markLost(cause); keys != nil {
		s.drop(cause, keys)
	}
}

// lostKeys are the keys a lost session held, by mode, for the unlock a
// pooler needs; non-nil when the loss is new.
type lostKeys struct{ exclusive, shared []keyspace.Key }

// markLost records the loss, takes every lease off the session and signals
// each lost, and fails the operations waiting for a batch. It returns the
// keys the session held; nil if the session had ended already.
func (s *session) markLost(cause error) *lostKeys {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return nil
	}
	s.err = cause
	close(s.ended)
	s.l.obs.sessions(s.mux).Add(-1)
	var leases []*Lease
	keys := &lostKeys{}
	for ls := s.head; ls != nil; ls = ls.sNext {
		leases = append(leases, ls)
		if ls.shared {
			keys.shared = append(keys.shared, ls.keys...)
		} else {
			keys.exclusive = append(keys.exclusive, ls.keys...)
		}
	}
	s.head, s.n = nil, 0
	pending := s.pending
	s.pending = nil
	claimed := s.claimed
	s.claimed = false
	s.mu.Unlock()

	if s.ci != nil {
		s.l.ka.unwatch(s)
	}
	if s.mux {
		s.l.mux.remove(s)
	}
	if claimed {
		s.ci.be.unclaim()
	}
	for _, o := range pending {
		o.answer(false, cause)
	}
	for _, ls := range leases {
		ls.markLost(cause)
	}
	if len(leases) == 0 {
		pid := 0
		if s.ci != nil {
			pid = s.pid()
		}
		s.l.log(slog.LevelDebug, "advisory: session lost", nil, slog.Int("pid", pid), slog.Any("error", cause))
	}
	return keys
}

// drop discards the connection of a lost session; the caller holds it.
func (s *session) drop(cause error, keys *lostKeys) {
	if errors.Is(cause, ErrPooler) {
		// Dropping the client connection does not end a pooled server
		// session: try to give the locks back first. They are held by the
		// session's backend or, if a statement that took one landed
		// elsewhere, by another server session of the pooler: the one that
		// answered the statement that showed the change, most likely
		// (PgBouncer hands a client the server session it used last).
		pids := s.suspects(cause)
		if len(keys.exclusive) > 0 {
			s.l.unlockBestEffort(s.conn, pids, keys.exclusive, false)
		}
		if len(keys.shared) > 0 {
			s.l.unlockBestEffort(s.conn, pids, keys.shared, true)
		}
	}
	s.l.discard(s.conn)
	s.giveSlot()
}

// close ends a session that holds nothing: its connection goes back to the
// pool (discard: is thrown away). The caller holds the connection. It
// reports false, and does nothing, if the session ended already or a lease
// or an operation is on it.
func (s *session) close(discard bool) bool {
	s.mu.Lock()
	if s.err != nil || s.n > 0 || len(s.pending) > 0 || s.sending || (s.tries > 0 && !discard) {
		// (A granted try not yet attached holds a lock: not to the pool.)
		s.mu.Unlock()
		return false
	}
	s.err = errClosed
	close(s.ended)
	s.l.obs.sessions(s.mux).Add(-1)
	claimed := s.claimed
	s.claimed = false
	s.mu.Unlock()
	if s.ci != nil {
		s.l.ka.unwatch(s)
	}
	// Forget the claim before the connection can go back to the pool:
	// another acquire may get it at once, and must not take it for a
	// pooler's.
	if claimed {
		s.ci.be.unclaim()
	}
	// The prepared statements are deallocated on the server before the
	// connection can go back to the pool; a connection being discarded
	// takes them along.
	for _, stmt := range append(s.batchStmt[:], s.tryStmt[0][0], s.tryStmt[0][1], s.tryStmt[1][0], s.tryStmt[1][1]) {
		if stmt != nil {
			stmt.Close()
		}
	}
	if discard {
		// Forget the connection here too: database/sql may have closed it
		// already (a driver that answered driver.ErrBadConn inside Raw),
		// and then discard cannot reach it.
		s.l.backends.forget(s.dc)
		s.l.discard(s.conn)
	} else {
		s.conn.Close()
	}
	s.giveSlot()
	return true
}

// giveSlot gives back the waiting slot the session holds, if any.
func (s *session) giveSlot() {
	if s.slot {
		s.slot = false
		s.l.mux.giveSlot()
	}
}

// claim records the session as the live one on its backend; false if
// another is there (only a pooler does that).
func (s *session) claim() bool {
	if !s.ci.be.claim() {
		return false
	}
	s.mu.Lock()
	s.claimed = true
	s.mu.Unlock()
	return true
}
