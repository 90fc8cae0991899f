package mocktest

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// refusal is one call of the code under test that no expectation matched.
type refusal struct {
	op   string // Exec, Query, Prepare, Begin, Commit or Rollback
	q    string
	args []any
	err  error // go-sqlmock's
}

// refused notes the call (op, q, args) if err is go-sqlmock's refusal of it.
func (m *Mock) refused(op, q string, args []driver.NamedValue, err error) {
	if !isRefusal(err) {
		return
	}
	vals := make([]any, len(args))
	for i, a := range args {
		vals[i] = a.Value
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refusals = append(m.refusals, refusal{op: op, q: q, args: vals, err: err})
}

// refusalErr describes every refused call so far, or returns nil.
func (m *Mock) refusalErr() error {
	m.mu.Lock()
	rs := append([]refusal(nil), m.refusals...)
	m.mu.Unlock()
	if len(rs) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "mocktest: %d call(s) of the code under test matched no expectation and failed "+
		"(mocktest.Lenient allows that):", len(rs))
	for i, r := range rs {
		fmt.Fprintf(&b, "\n  %d. sent     %s\n     expected %s\n     sqlmock: %v", i+1, r.sent(), r.expected(), r.err)
	}
	return errors.New(b.String())
}

// sent says what the code under test sent, and which expectation expects
// it where that is one of this package's.
func (r refusal) sent() string {
	if r.q == "" {
		return strings.ToUpper(r.op) + ", which Expect" + r.op + " expects"
	}
	s := fmt.Sprintf("%s %q with args %v", r.op, r.q, r.args)
	if sh, ok := shapes()[r.q]; ok {
		s += ": " + sh.describe(r.args)
	}
	return s
}

// expected says what the mock expected instead, as far as go-sqlmock's
// message tells.
func (r refusal) expected() string {
	msg := r.err.Error()
	switch {
	case strings.Contains(msg, "all expectations were already fulfilled"):
		return "nothing more: every expectation had been met"
	case strings.Contains(msg, "arguments do not match"):
		return "the same statement with other arguments"
	case strings.Contains(msg, "but it was not set for expectation"):
		return "this statement, but its expectation has no WillReturnResult or WillReturnRows"
	}
	if _, text, ok := strings.Cut(msg, `does not equal to expected "`); ok {
		return statement(strings.TrimSuffix(text, `"`))
	}
	if _, next, ok := strings.Cut(msg, "next expectation is: Expected"); ok {
		if _, text, ok := strings.Cut(next, "matches sql: '"); ok {
			text, _, _ = strings.Cut(text, "'\n")
			return statement(text)
		}
		for _, op := range []string{"Begin", "Commit", "Rollback", "Exec", "Query", "Prepare", "Ping", "Close"} {
			if strings.HasPrefix(next, op) {
				return "what Expect" + op + " expects"
			}
		}
	}
	return "another call (see sqlmock's message)"
}

// statement names the statement an expectation expects by its text.
func statement(text string) string {
	if sh, ok := shapes()[text]; ok {
		return "the statement of " + sh.name
	}
	return strconv.Quote(text)
}

// shape is one statement of advisory or txlock, whatever its key: the
// expectation that expects it, and what it does.
type shape struct {
	name    string // ExpectUnlock, ...
	what    string // "advisory's release"
	pair    bool   // its key is a pair (two arguments), else a bigint (one)
	timeout bool   // its last argument is lock_timeout in milliseconds
}

// describe says what the statement of sh does with args, and the
// expectation that expects it.
func (sh shape) describe(args []any) string {
	n := func(i int) int64 {
		if i < len(args) {
			v, _ := args[i].(int64)
			return v
		}
		return 0
	}
	key := keyspace.Int64(n(0))
	if sh.pair {
		key = keyspace.Pair(int32(n(0)), int32(n(1)))
	}
	s := sh.what + " of " + key.String() + ", which " + sh.name
	if sh.timeout && len(args) > 0 {
		if ms, ok := args[len(args)-1].(string); ok {
			if d, err := time.ParseDuration(ms + "ms"); err == nil {
				s += " with WithLockTimeout(" + d.String() + ")"
			}
		}
	}
	return s + " expects"
}

// shapes maps the text of every single-key statement that advisory and
// txlock send (in the style the mock sees) to its shape. The text of a
// statement does not depend on its key's values, which are arguments.
var shapes = sync.OnceValue(func() map[string]shape {
	out := map[string]shape{sqltext.Ping: {name: "ExpectKeepAlive", what: "advisory's keepalive ping"}}
	modes := []struct {
		m          sqltext.Mode
		lock, xact string
		what       string
	}{
		{sqltext.Mode{}, "ExpectLock", "ExpectXactLock", "lock"},
		{sqltext.Mode{Shared: true}, "ExpectLockShared", "ExpectXactLockShared", "shared lock"},
		// Lock and LockShared try first, as TryLock and TryLockShared do.
		{sqltext.Mode{Try: true}, "ExpectLock or ExpectTryLock", "ExpectXactTryLock", "try-lock"},
		{sqltext.Mode{Shared: true, Try: true}, "ExpectLockShared or ExpectTryLockShared", "ExpectXactTryLockShared", "shared try-lock"},
	}
	for _, k := range []keyspace.Key{keyspace.Int64(1), keyspace.Pair(1, 1)} {
		pair := k.IsPair()
		for _, d := range []time.Duration{0, time.Second} {
			for _, md := range modes {
				session := shape{name: md.lock, what: "advisory's " + md.what, pair: pair, timeout: d > 0}
				xact := shape{name: md.xact, what: "txlock's transaction " + md.what, pair: pair, timeout: d > 0}
				q, _ := sqltext.Lock(style, md.m, k, d)
				out[q] = session
				q, _ = sqltext.LockExec(style, md.m, k, d)
				out[q] = session
				q, _ = sqltext.XactLock(style, md.m, k, d)
				out[q] = xact
				q, _ = sqltext.XactLockExec(style, md.m, k, d)
				out[q] = xact
			}
		}
		q, _ := sqltext.Unlock(style, false, k)
		out[q] = shape{name: "ExpectUnlock", what: "advisory's release", pair: pair}
		q, _ = sqltext.Unlock(style, true, k)
		out[q] = shape{name: "ExpectUnlockShared", what: "advisory's release of a shared lock", pair: pair}
	}
	return out
})
