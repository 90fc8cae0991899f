package advisory_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/faultproxy"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// env is one test's fresh database: db under the driver being tested, admin
// a separate lib/pq pool on the same database (another "process") for
// pg_locks and pg_terminate_backend.
type env struct {
	dsn    string
	dbname string
	db     *sql.DB
	admin  *sql.DB
}

// setup opens a fresh database and registers the end-of-test checks: no
// goroutine left (checked last, after the pools are closed), no advisory
// lock left, no connection of db left in use.
func setup(t *testing.T, driver string) *env {
	t.Helper()
	return setupDSN(t, driver, func() string { return itest.DSN(t) })
}

// setupOn is setup with a fresh database on srv, a server of the test's own.
func setupOn(t *testing.T, srv *itest.Server, driver string) *env {
	t.Helper()
	return setupDSN(t, driver, func() string { return srv.NewDatabase(t) })
}

// setupDSN is setup on the database that newDB makes.
func setupDSN(t *testing.T, driver string, newDB func() string) *env {
	t.Helper()
	t.Cleanup(func() { testkit.VerifyNone(t) })
	dsn := newDB()
	e := &env{dsn: dsn, dbname: dbName(t, dsn)}
	e.db = itest.OpenDSN(t, driver, dsn)
	e.admin = itest.OpenDSN(t, "postgres", dsn)
	t.Cleanup(func() {
		testkit.WaitNoAdvisoryLocks(t, e.admin)
		testkit.WaitConnsIdle(t, e.db)
	})
	return e
}

func dbName(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parse DSN: %v", err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

// throughProxy opens a pool of driver to e's database through a fault
// proxy of its own, closed at the end of the test.
func (e *env) throughProxy(t *testing.T, driver string) (*faultproxy.Proxy, *sql.DB) {
	t.Helper()
	p, err := faultproxy.New(itest.Shared(t).Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, itest.OpenDSN(t, driver, itest.Shared(t).DSNAt(p.Addr(), e.dbname))
}

// warmPooler makes a transaction pooler in front of db open a second server
// connection, as any real traffic would; with round robin a session's
// statements then alternate between the two backends.
func warmPooler(t *testing.T, ctx context.Context, db *sql.DB) {
	t.Helper()
	warm := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := db.ExecContext(ctx, "SELECT pg_sleep(0.3)")
			warm <- err
		}()
	}
	for range 2 {
		if err := <-warm; err != nil {
			t.Fatalf("warming the pool: %v", err)
		}
	}
}

// testKey is a key of the test's own.
func testKey(t *testing.T) keyspace.Key {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return keyspace.Hash(t.Name() + hex.EncodeToString(b[:]))
}

func timeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// holders returns the pids that hold key (granted) in e's database.
func (e *env) holders(t *testing.T, key keyspace.Key) []int {
	t.Helper()
	return e.lockRows(t, key, true)
}

// lockRows returns the pids of key's rows in pg_locks of e's database that
// are granted (or, with granted false, waiting).
func (e *env) lockRows(t *testing.T, key keyspace.Key, granted bool) []int {
	t.Helper()
	return lockRows(t, e.admin, key, granted)
}

// lockRows returns the pids of key's rows in pg_locks of admin's database
// that are granted (or, with granted false, waiting).
func lockRows(t *testing.T, admin *sql.DB, key keyspace.Key, granted bool) []int {
	t.Helper()
	locks, err := testkit.AdvisoryLocks(timeout(t, 10*time.Second), admin)
	if err != nil {
		t.Fatalf("pg_locks: %v", err)
	}
	c, o, s := key.Lock()
	var pids []int
	for _, l := range locks {
		if l.Granted == granted && l.ClassID == c && l.ObjID == o && l.ObjSubID == s {
			pids = append(pids, l.PID)
		}
	}
	return pids
}

// terminate ends backend pid of the test's own database.
func (e *env) terminate(t *testing.T, pid int) {
	t.Helper()
	var ok bool
	err := e.admin.QueryRowContext(timeout(t, 10*time.Second),
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND datname = current_database()`, pid).Scan(&ok)
	if err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d): %v %v", pid, ok, err)
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
