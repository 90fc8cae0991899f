package advisory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Errors of leader election, to compare with errors.Is.
var (
	// ErrResigned is the cause (context.Cause) of the context of an
	// OnElected function that Resign ended.
	ErrResigned = errors.New("advisory: leadership resigned")

	// ErrTermEnded is the cause of the context of an OnElected function
	// after it returned: the term ends with it.
	ErrTermEnded = errors.New("advisory: term ended: OnElected returned")

	// ErrBadElector is returned by NewElector for a nil *sql.DB or a nil
	// OnElected function.
	ErrBadElector = errors.New("advisory: bad elector")

	// ErrNoLeader is returned by CurrentLeader when no session holds the
	// election's lock.
	ErrNoLeader = errors.New("advisory: no leader")
)

// DefaultElectBackoff is the range of the pause before an Elector
// campaigns again after a term ended or a campaign failed (ElectBackoff).
const (
	DefaultElectBackoffMin = 100 * time.Millisecond
	DefaultElectBackoffMax = 5 * time.Second
)

// ElectorOption configures an Elector.
type ElectorOption func(*Elector)

// ElectAs sets the identity that CurrentLeader and WatchLeader report for
// this candidate when it leads (default: host name, ":", process id). It is
// written into the application_name of the leader's session, which the
// server keeps to 63 bytes of printable ASCII: other bytes become '?', and
// an identity too long for what the term leaves is cut.
func ElectAs(identity string) ElectorOption {
	return func(e *Elector) { e.identity = identity }
}

// ElectBackoff sets the range of the pause before the Elector campaigns
// again after a term ended, a loss, or a failed campaign: min doubling at
// each failure in a row up to max, each pause drawn at random between half
// and all of it, so that candidates that lost one server do not all come
// back at once. Defaults DefaultElectBackoffMin and DefaultElectBackoffMax.
func ElectBackoff(min, max time.Duration) ElectorOption {
	return func(e *Elector) {
		e.backoffMin = maxDur(min, time.Millisecond)
		e.backoffMax = maxDur(max, e.backoffMin)
	}
}

// ElectLocker passes options to the Locker the Elector campaigns with,
// such as WithKeepAlive (how soon a leader learns it lost its lock) or
// WithLogger. The Elector adds WithFencing (with the table of
// ElectFenceTable) and WithDedicatedSessions: the term is the lease's
// fencing token, and the lock sits on a session of its own, whose
// application_name says who leads.
func ElectLocker(opts ...Option) ElectorOption {
	return func(e *Elector) { e.lockerOpts = append(e.lockerOpts, opts...) }
}

// ElectFenceTable names the fencing table the terms come from ("" for
// DefaultFenceTable); see WithFencing. It must exist (CreateFenceTable).
func ElectFenceTable(table string) ElectorOption {
	return func(e *Elector) { e.fenceTable = table }
}

// ElectDeadPeer sets how soon, at most, the server ends the session of a
// leader that a network partition cut off, and with it frees the lock for
// the next leader: the leader's session gets TCP keepalives (idle d/4, then
// one probe a second, 3 probes) and tcp_user_timeout d. Default 5 s;
// values below 3 s are raised to 3 s. Without it a partitioned leader would
// keep the lock for the server's TCP defaults (about two hours on Linux).
// The leader itself learns of the partition within its keepalive interval
// plus about a second, before the server frees the lock.
func ElectDeadPeer(d time.Duration) ElectorOption {
	return func(e *Elector) { e.deadPeer = maxDur(d, 3*time.Second) }
}

// ElectOnEnd sets a function that runs after each term, once its lock is
// released or lost, with the term and the outcome: nil if the lock was
// verified held until its release (Lease.Release's guarantee), else the
// error (wrapping ErrLockLost after a loss). For metrics and tests; it runs
// on Run's goroutine and must not block.
func ElectOnEnd(f func(term int64, err error)) ElectorOption {
	return func(e *Elector) { e.onEnd = f }
}

// Elector campaigns for leadership of one key among any number of
// candidates in any number of processes, and runs the caller's OnElected
// while it leads. It is safe for concurrent use; Run runs once at a time.
//
// Run campaigns by waiting on the server for the key's lock, on a session
// of its own (so candidates cost one connection each, and no round trips
// while they wait). When granted, the lock's fencing token is the term,
// strictly greater than every term before it across all candidates, server
// restarts and crashes (WithFencing); the leader's session then says who
// leads in its application_name ("pgadvisory:" term ":" identity, for
// CurrentLeader), and OnElected(ctx, term) runs. Its ctx ends when the lock
// is lost (cause wrapping ErrLockLost: the session ended, a partition, a
// server restart; the keepalive finds it within its interval plus about a
// second), on Resign (ErrResigned), or when Run's context ends. When
// OnElected returns the term ends (it is expected to return when ctx ends,
// and may return earlier to give leadership up): the lock is released and
// Run campaigns again after a jittered pause (ElectBackoff), until its own
// context ends.
//
// Writes that the leader makes elsewhere should carry the term, and the
// store should refuse a write with a term below the highest it has seen:
// a deposed leader that has not noticed yet (a GC pause) then cannot write.
// Writes to this database can go through the leader's session:
// LeaseFromContext(ctx) of the context OnElected gets is the leader's
// lease, and its Tx fails once the lock is lost.
type Elector struct {
	db         *sql.DB
	key        keyspace.Key
	onElected  func(ctx context.Context, term int64) error
	identity   string
	backoffMin time.Duration
	backoffMax time.Duration
	deadPeer   time.Duration
	fenceTable string
	lockerOpts []Option
	onEnd      func(term int64, err error)

	l       *Locker
	running atomic.Bool

	mu  sync.Mutex
	cur *term // nil unless leading
}

// term is one leadership.
type term struct {
	n        int64
	lease    *Lease
	cancel   context.CancelCauseFunc
	restore  []any // the session settings before the term
	done     bool  // the lock was given up (Resign, or the end of the term)
	endErr   error // the outcome of giving it up
	released chan struct{}
}

// NewElector returns an Elector for key over db that runs onElected while
// it leads. It returns an error wrapping ErrBadElector for a nil db or
// onElected.
func NewElector(db *sql.DB, key keyspace.Key, onElected func(ctx context.Context, term int64) error, opts ...ElectorOption) (*Elector, error) {
	switch {
	case db == nil:
		return nil, errorf("advisory: %w: nil *sql.DB", ErrBadElector)
	case onElected == nil:
		return nil, errorf("advisory: %w: nil OnElected function", ErrBadElector)
	}
	host, _ := os.Hostname()
	e := &Elector{
		db: db, key: key, onElected: onElected,
		identity:   host + ":" + strconv.Itoa(os.Getpid()),
		backoffMin: DefaultElectBackoffMin, backoffMax: DefaultElectBackoffMax,
		deadPeer: 5 * time.Second,
	}
	for _, o := range opts {
		if o != nil {
			o(e)
		}
	}
	lo := append([]Option{}, e.lockerOpts...)
	lo = append(lo, WithFencing(e.fenceTable), WithDedicatedSessions())
	e.l = New(db, lo...)
	return e, nil
}

// Key returns the key the Elector campaigns for.
func (e *Elector) Key() keyspace.Key { return e.key }

// Term returns the current term and true while this Elector leads (from
// just before OnElected starts until its lock is given up), else 0, false.
func (e *Elector) Term() (int64, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur == nil || e.cur.done {
		return 0, false
	}
	return e.cur.n, true
}

// Run campaigns and leads, again and again, until ctx ends; then it
// returns ctx's error (after the running OnElected returned and the lock
// was released). It returns earlier only for what retrying cannot fix: a
// missing or malformed fencing table (ErrNoFenceTable, ErrFenceLayout,
// ErrNoFenceEpoch, ErrBadFenceTable) or a pooler in transaction mode
// (ErrPooler). Other failures to campaign (the server is down) are retried
// after a jittered pause. Run returns an error at once if the Elector is
// already running.
func (e *Elector) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("advisory: Elector.Run called while it runs")
	}
	defer e.running.Store(false)
	fails := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		lease, err := e.l.Lock(ctx, e.key)
		if err == nil {
			err = e.lead(ctx, lease)
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case permanent(err):
			return err
		case err != nil:
			fails++
			e.l.log(slog.LevelWarn, "advisory: campaign failed", []keyspace.Key{e.key}, slog.Any("error", err))
		default:
			fails = 0
		}
		if !sleepCtx(ctx, e.backoff(fails)) {
			return ctx.Err()
		}
	}
}

// permanent reports whether a campaign failed for a reason that retrying
// cannot fix.
func permanent(err error) bool {
	for _, p := range []error{ErrNoFenceTable, ErrFenceLayout, ErrNoFenceEpoch, ErrBadFenceTable, ErrPooler, ErrNilDB} {
		if errors.Is(err, p) {
			return true
		}
	}
	return false
}

// backoff is the pause after fails failures in a row (0: after a term).
func (e *Elector) backoff(fails int) time.Duration {
	d := e.backoffMin
	for i := 0; i < fails && d < e.backoffMax; i++ {
		d *= 2
	}
	d = min(d, e.backoffMax)
	return d/2 + rand.N(d/2+1)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// lead runs one term on lease: it identifies the session, runs OnElected,
// and gives the lock up. It returns nil for a term that ran, else why it
// could not.
func (e *Elector) lead(ctx context.Context, lease *Lease) error {
	t := &term{n: lease.Token(), lease: lease, released: make(chan struct{})}
	if err := e.identify(ctx, t); err != nil {
		_ = lease.Release(ctx)
		return err
	}
	lctx, cancel := context.WithCancelCause(context.WithValue(ctx, leaseKey{}, lease))
	t.cancel = cancel
	stop := lease.AfterLost(func(err error) { cancel(err) })
	e.mu.Lock()
	e.cur = t
	e.mu.Unlock()
	defer func() {
		// Also when OnElected panics: the panic goes on after the release.
		cancel(ErrTermEnded)
		stop()
		err := e.giveUp(t)
		e.mu.Lock()
		e.cur = nil
		e.mu.Unlock()
		if e.onEnd != nil {
			e.onEnd(t.n, err)
		}
	}()
	e.l.log(slog.LevelInfo, "advisory: elected", []keyspace.Key{e.key}, slog.Int64("term", t.n), slog.Int("pid", lease.PID()))
	if err := e.onElected(lctx, t.n); err != nil && !errors.Is(err, context.Canceled) {
		e.l.log(slog.LevelWarn, "advisory: OnElected returned an error", []keyspace.Key{e.key}, slog.Int64("term", t.n), slog.Any("error", err))
	}
	return nil
}

// identify writes who leads into the leader's session, and the TCP
// settings that end a partitioned leader's session soon.
func (e *Elector) identify(ctx context.Context, t *term) error {
	args := sqltext.ElectArgs(t.n, e.identity, e.deadPeer)
	old := make([]string, len(sqltext.ElectSettings))
	err := t.lease.Tx(ctx, func(tx *sql.Tx) error {
		dest := make([]any, 0, 2*len(old))
		for i := range old {
			dest = append(dest, &old[i])
		}
		for range old {
			dest = append(dest, new(string))
		}
		return tx.QueryRowContext(ctx, sqltext.ElectIdentify, args...).Scan(dest...)
	})
	if err != nil {
		return errorf("advisory: elected on %v, identifying the session: %w", e.key, err)
	}
	// current_setting shows units ("2s", "5000ms"); set_config takes the
	// values back as they are.
	for _, v := range old {
		t.restore = append(t.restore, v)
	}
	return nil
}

// Resign gives leadership up at once: the lock is released (after the
// session's settings are put back) and the context of OnElected ends with
// cause ErrResigned; Run campaigns again after a pause (ElectBackoff), once
// OnElected has returned. It returns the release's error, nil when not
// leading.
func (e *Elector) Resign(ctx context.Context) error {
	e.mu.Lock()
	t := e.cur
	e.mu.Unlock()
	if t == nil {
		return nil
	}
	if t.cancel != nil {
		t.cancel(ErrResigned)
	}
	return e.giveUp(t)
}

// giveUp releases t's lock once (Resign and the end of the term may both
// ask) and returns the outcome.
func (e *Elector) giveUp(t *term) error {
	e.mu.Lock()
	if t.done {
		e.mu.Unlock()
		<-t.released
		return t.endErr
	}
	t.done = true
	e.mu.Unlock()
	if t.lease.Err() == nil {
		ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
		_ = t.lease.Tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, sqltext.ElectRestore, t.restore...)
			return err
		})
		cancel()
	}
	t.endErr = t.lease.Release(context.Background())
	if errors.Is(t.endErr, ErrReleased) {
		t.endErr = nil
	}
	close(t.released)
	return t.endErr
}

// Leader is who holds an election's lock, as CurrentLeader and WatchLeader
// see it.
type Leader struct {
	// Identity is the leader's ElectAs identity, and Term its term; both
	// empty or zero when the lock is held by a session that is not an
	// Elector's (or one that has just been granted it and not yet said
	// who it is).
	Identity string
	Term     int64
	// PID is the holding backend.
	PID int
	// AppName is the holding session's application_name.
	AppName string
}

func (l Leader) String() string {
	if l.PID == 0 {
		return "no leader"
	}
	if l.Term == 0 {
		return fmt.Sprintf("held by pid %d (%q), not an elector", l.PID, l.AppName)
	}
	return fmt.Sprintf("%s, term %d, pid %d", l.Identity, l.Term, l.PID)
}

// CurrentLeader reports who holds the election lock of key in db's
// database, from pg_locks and pg_stat_activity, in one query that any
// process can run: an error wrapping ErrNoLeader when nobody holds it.
func CurrentLeader(ctx context.Context, db *sql.DB, key keyspace.Key) (Leader, error) {
	if db == nil {
		return Leader{}, ErrNilDB
	}
	c, o, s := key.Lock()
	rows, err := db.QueryContext(ctx, sqltext.LockHolders, int64(c), int64(o), int64(s))
	if err != nil {
		return Leader{}, errorf("advisory: who leads %v: %w", key, err)
	}
	defer rows.Close()
	var ld Leader
	for rows.Next() {
		if err := rows.Scan(&ld.PID, &ld.AppName); err != nil {
			return Leader{}, errorf("advisory: who leads %v: %w", key, err)
		}
		if ld.parse() {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return Leader{}, errorf("advisory: who leads %v: %w", key, err)
	}
	if ld.PID == 0 {
		return Leader{}, errorf("advisory: %v: %w", key, ErrNoLeader)
	}
	return ld, nil
}

// parse reads Identity and Term from AppName; false if it is not a
// leader's.
func (l *Leader) parse() bool {
	rest, ok := strings.CutPrefix(l.AppName, sqltext.ElectAppPrefix)
	if !ok {
		return false
	}
	num, id, ok := strings.Cut(rest, ":")
	n, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || n <= 0 {
		return false
	}
	l.Term, l.Identity = n, id
	return true
}

// WatchLeader reports who leads the election of key, on the returned
// channel: once at the start and then at every change (another term or
// pid, or no leader: the zero Leader), until ctx ends, when it closes the
// channel. It asks CurrentLeader once per every (default 1 s when every <=
// 0), on a connection of db's pool borrowed for that query only: one small
// query per interval, whatever the number of candidates, and a change is
// seen within the interval. A failed query is retried at the next interval.
// The channel is unbuffered beyond one value: a slow reader misses
// intermediate leaders, never the latest.
func WatchLeader(ctx context.Context, db *sql.DB, key keyspace.Key, every time.Duration) <-chan Leader {
	if every <= 0 {
		every = time.Second
	}
	out := make(chan Leader, 1)
	go func() {
		defer close(out)
		var last Leader
		first := true
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			ld, err := CurrentLeader(ctx, db, key)
			if err == nil || errors.Is(err, ErrNoLeader) {
				if first || ld.PID != last.PID || ld.Term != last.Term {
					first, last = false, ld
					select {
					case <-out: // drop the unread older value
					default:
					}
					out <- ld
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return out
}

func maxDur(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}
