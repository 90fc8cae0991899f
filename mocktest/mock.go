package mocktest

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Mock holds the expectations of one mocked database. It embeds
// sqlmock.Sqlmock for everything that is not a lock (ExpectBegin,
// ExpectExec, ExpectCommit, ...). Add the expectations, in the order they
// must be met in, before the code under test runs: like sqlmock's own, adding
// them is not safe while the mock is in use.
type Mock struct {
	sqlmock.Sqlmock

	db      *sql.DB     // over sqlmock's connections, wrapped (strict.go)
	smdb    *sql.DB     // sqlmock's own
	keep    driver.Conn // holds the mock open (see Open)
	timeout time.Duration
	lenient bool

	fencing    bool
	fenceTable string // quoted as advisory quotes it
	fenceName  string // as given to WithFencing

	mu       sync.Mutex
	pid      int                    // the pid of the latest acquire expectation
	tokens   map[keyspace.Key]int64 // the latest fencing token per key
	drawn    map[string]int64       // draws per fencing table (quoted)
	refusals []refusal              // the calls no expectation matched
}

// Option configures New, or one expectation.
type Option func(*config)

type config struct {
	timeout   time.Duration
	fencing   bool
	fenceName string
	lenient   bool
}

// WithLockTimeout says which lock_timeout the code under test asks for (as
// advisory.WithLockTimeout or txlock.WithLockTimeout do): the statements they
// send differ with it. Given to New it applies to every waiting lock
// expectation; given to one expectation it applies to that one.
func WithLockTimeout(d time.Duration) Option {
	return func(c *config) { c.timeout = d }
}

// WithFencing says that the code under test's Locker has
// advisory.WithFencing(table): the session acquire expectations then expect
// the statements that also draw fencing tokens, and answer with the
// tokens a session that knows the epoch draws from a fresh table in the
// server's first lifetime: 1<<40 + 1, 1<<40 + 2, ... over all keys (epoch 1,
// counter 1, 2, ...; the keys of one LockAll share one token), in the order
// the expectations are added (Token tells the latest of a key). Given to
// New or Open; Locker applies it too.
func WithFencing(table string) Option {
	return func(c *config) { c.fencing, c.fenceName = true, table }
}

// Lenient makes the mock behave as plain go-sqlmock does with a call that no
// expectation matches: the call fails, and that is all. By default such a
// call also fails the test (New) or makes ExpectationsWereMet return an
// error (Open), even when the code under test swallows the failure, as a
// release that is only logged or a middleware that answers 503 does: a
// forgotten ExpectUnlock, or an unexpected release, must not pass. Given to
// New or Open; an expectation ignores it.
func Lenient() Option { return func(c *config) { c.lenient = true } }

// testingT is what the mock needs of a test, so that its own failure path can
// be tested too.
type testingT interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

var dsnSeq atomic.Int64

// New returns a database backed by a fresh mock, and the mock. The query
// matcher is sqlmock.QueryMatcherEqual. When the test ends, the test fails if
// an expectation is left unmet or if the code under test made a call that no
// expectation matched (unless Lenient): the failure lists each such call,
// what was sent and what was expected instead. Then the mock is closed.
func New(tb testing.TB, opts ...Option) (*sql.DB, *Mock) {
	tb.Helper()
	return newMock(tb, opts...)
}

func newMock(t testingT, opts ...Option) (*sql.DB, *Mock) {
	t.Helper()
	db, m, err := Open(opts...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := m.ExpectationsWereMet(); err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "mocktest: ") {
				msg = "mocktest: " + msg
			}
			t.Errorf("%s", msg)
		}
		m.Close()
	})
	return db, m
}

// Open is New for code without a testing.TB, such as an Example: the caller
// checks m.ExpectationsWereMet, which also reports the calls that no
// expectation matched, and calls m.Close.
func Open(opts ...Option) (*sql.DB, *Mock, error) {
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	dsn := fmt.Sprintf("mocktest_%d", dsnSeq.Add(1))
	smdb, sm, err := sqlmock.NewWithDSN(dsn, sqlmock.QueryMatcherOption(sqlmock.QueryMatcherEqual))
	if err != nil {
		return nil, nil, fmt.Errorf("mocktest: %w", err)
	}
	// sqlmock forgets a mock once its last driver connection closes, after
	// which the pool cannot open another. Code under test discards
	// connections on purpose (a lost lock), so hold one driver connection
	// outside the pool for the mock's lifetime.
	keep, err := smdb.Driver().Open(dsn)
	if err != nil {
		smdb.Close()
		return nil, nil, fmt.Errorf("mocktest: %w", err)
	}
	m := &Mock{Sqlmock: sm, smdb: smdb, keep: keep, timeout: c.timeout, lenient: c.lenient,
		pid: firstPID - 1, tokens: map[keyspace.Key]int64{}, drawn: map[string]int64{}}
	m.db = sql.OpenDB(&connector{drv: smdb.Driver(), dsn: dsn, m: m})
	if c.fencing {
		// A name advisory refuses sends nothing, so its quoted form is never used.
		quoted, _ := sqltext.QuoteFenceTable(c.fenceName)
		m.fencing, m.fenceName, m.fenceTable = true, c.fenceName, quoted
	}
	return m.db, m, nil
}

// ExpectationsWereMet returns an error if an expectation is left unmet or,
// unless the mock is Lenient, if the code under test made a call that no
// expectation matched (the error then lists those calls first, each with
// what was sent and what was expected instead). New's cleanup calls it.
func (m *Mock) ExpectationsWereMet() error {
	unmet := m.Sqlmock.ExpectationsWereMet()
	if m.lenient {
		return unmet
	}
	return errors.Join(m.refusalErr(), unmet)
}

// Close closes the mocked database. New's cleanup calls it.
func (m *Mock) Close() {
	// sqlmock reports each Close as unexpected; that is no concern of the
	// code under test.
	_ = m.db.Close()
	_ = m.smdb.Close()
	_ = m.keep.Close()
}

// firstPID is the backend pid the first acquire expectation answers with.
const firstPID = 10001

// DB returns the mocked database New returned.
func (m *Mock) DB() *sql.DB { return m.db }

// PID returns the backend pid that the latest acquire expectation answers
// with, as Lease.PID reports it.
func (m *Mock) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pid
}

// nextPID allocates the pid of a new acquire expectation.
func (m *Mock) nextPID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pid++
	return m.pid
}

// Locker returns advisory.New(db, opts...) for the mocked database with the
// settings that match the mock first (opts given here override them): the
// mock's lock timeout and fencing, and a keepalive of an hour, so that no
// ping that the test did not expect is sent while it runs. Tests of the
// keepalive itself pass advisory.WithKeepAlive with a short interval and
// expect the pings.
func (m *Mock) Locker(opts ...advisory.Option) *advisory.Locker {
	all := []advisory.Option{advisory.WithKeepAlive(time.Hour), advisory.WithLockTimeout(m.timeout)}
	if m.fencing {
		all = append(all, advisory.WithFencing(m.fenceName))
	}
	return advisory.New(m.db, append(all, opts...)...)
}

// Token returns the latest fencing token the mock's expectations hand out
// for key (0 if none), as the lease that key's latest grant makes reports it
// with Lease.Token.
func (m *Mock) Token(key keyspace.Key) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tokens[key]
}

// firstToken is the first token a fresh fencing table hands out in the
// server's first lifetime: epoch 1 (the first draw finds the row's epoch 0
// of no lifetime and bumps it), counter 1.
const firstToken = 1<<sqltext.FenceCounterBits + 1

// nextToken draws the next token of the fencing table table (quoted), as
// a session that knows the epoch does on the server, for the grant of keys;
// it returns the draw and the token. All keys of one grant share the token.
func (m *Mock) nextToken(table string, keys []keyspace.Key) (draw, token int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.drawn[table]++
	n := m.drawn[table]
	token = firstToken - 1 + n
	for _, k := range keys {
		m.tokens[k] = token
	}
	// The first bump moves the sequence to 2^40 - 1, the new epoch's base.
	return 1<<sqltext.FenceCounterBits - 1 + n, token
}

// timeoutFor is the lock_timeout an expectation expects.
func (m *Mock) timeoutFor(opts []Option) time.Duration {
	c := config{timeout: m.timeout}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return c.timeout
}

// style is how advisory and txlock write keys for sqlmock's driver.
const style = sqltext.Params

// expect adds one query expectation for the statement (q, args) with its
// arguments matched exactly.
func (m *Mock) expect(q string, args []any) *sqlmock.ExpectedQuery {
	e := m.ExpectQuery(q)
	if len(args) == 0 {
		return e.WithoutArgs()
	}
	return e.WithArgs(driverValues(args)...)
}

// expectExec is expect for a statement that advisory sends with Exec.
func (m *Mock) expectExec(q string, args []any) *sqlmock.ExpectedExec {
	e := m.ExpectExec(q)
	if len(args) == 0 {
		return e.WithoutArgs()
	}
	return e.WithArgs(driverValues(args)...)
}

// driverValues converts statement arguments for sqlmock's WithArgs.
func driverValues(args []any) []driver.Value {
	vals := make([]driver.Value, len(args))
	for i, a := range args {
		vals[i] = a
	}
	return vals
}
