// Package testkit holds what this module's own integration tests share: a
// TestMain with a goroutine leak check, and checks that no advisory lock or
// connection is left behind. Users get itest and mocktest instead.
package testkit

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgadvisory/pgadvisory/itest"
)

// Main runs the package's tests, stops itest's shared server, then fails the
// binary if goroutines were left running. Use it from TestMain:
//
//	func TestMain(m *testing.M) { testkit.Main(m) }
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main without the exit, for a TestMain with work of its own to undo
// afterwards: it returns the exit code.
func Run(m *testing.M) int {
	code := itest.Run(m)
	if code == 0 {
		if err := goleak.Find(LeakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "testkit: goroutine leak:", err)
			code = 1
		}
	}
	return code
}

// LeakOptions are the goroutines that database/sql, the drivers and itest's
// running servers keep by design and that are not leaks of this module.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		goleak.IgnoreAnyFunction("database/sql.(*DB).connectionCleaner"),
		goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgconn/ctxwatch.(*ContextWatcher).Watch.func1"),
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"),
		// A local server that itest started (and a test restarted) is
		// watched by one goroutine until the server stops: part of the
		// server, which outlives the test that restarted it, not a leak.
		goleak.IgnoreAnyFunction("github.com/pgadvisory/pgadvisory/itest.(*localServer).start.func1"),
	}
}

// VerifyNone fails t if goroutines beyond the ignored ones are running; use it
// at the end of a test (with defer) for a per-test goroutine check.
func VerifyNone(t testing.TB) {
	t.Helper()
	goleak.VerifyNone(t, LeakOptions()...)
}

// Lock is one advisory lock row of pg_locks in the current database.
type Lock struct {
	PID      int
	ClassID  uint32
	ObjID    uint32
	ObjSubID int16
	Mode     string
	Granted  bool
}

// AdvisoryLocks returns the advisory lock rows of the database db is
// connected to (other databases are other tests' business).
func AdvisoryLocks(ctx context.Context, db *sql.DB) ([]Lock, error) {
	rows, err := db.QueryContext(ctx, `SELECT pid, classid::int8, objid::int8, objsubid, mode, granted
		FROM pg_locks WHERE locktype = 'advisory'
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Lock
	for rows.Next() {
		var l Lock
		var c, o int64
		if err := rows.Scan(&l.PID, &c, &o, &l.ObjSubID, &l.Mode, &l.Granted); err != nil {
			return nil, err
		}
		l.ClassID, l.ObjID = uint32(c), uint32(o)
		out = append(out, l)
	}
	return out, rows.Err()
}

// WaitNoAdvisoryLocks waits up to 10 s until no backend but those in allowed
// holds or waits for an advisory lock in db's database, and fails t with the
// rows left if that does not happen. A backend whose client went away ends a
// moment later, so the check polls instead of reading once.
func WaitNoAdvisoryLocks(t testing.TB, db *sql.DB, allowed ...int) {
	t.Helper()
	ok := make(map[int]bool, len(allowed))
	for _, p := range allowed {
		ok[p] = true
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		locks, err := AdvisoryLocks(ctx, db)
		cancel()
		var left []string
		for _, l := range locks {
			if !ok[l.PID] {
				left = append(left, fmt.Sprintf("%+v", l))
			}
		}
		if err == nil && len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("testkit: reading pg_locks: %v", err)
			}
			t.Fatalf("testkit: advisory locks left in pg_locks:\n%s", strings.Join(left, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitConnsIdle waits up to 10 s until db has no connection in use, and fails
// t otherwise: a connection still in use after the code under test returned
// is a leak.
func WaitConnsIdle(t testing.TB, db *sql.DB) {
	t.Helper()
	WaitConnsIdleWithin(t, db, 10*time.Second)
}

// WaitConnsIdleWithin is WaitConnsIdle with a bound of d: after a network
// partition heals, a driver call stuck on the cut connection returns only
// when the client's next retransmission meets the server's reset, which
// can take longer than WaitConnsIdle waits.
func WaitConnsIdleWithin(t testing.TB, db *sql.DB, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for db.Stats().InUse != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("testkit: %d connections still in use after %v", db.Stats().InUse, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
