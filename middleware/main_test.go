package middleware_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// orders is the namespace of every test and example here.
var orders = keyspace.MustNamespace("middleware-test-orders", 7001)

// env is one test's fresh database: db under the driver being tested (the
// application's pool), admin a separate lib/pq pool on the same database
// (another "process": holds locks, reads pg_locks, terminates backends).
type env struct {
	dsn   string
	db    *sql.DB
	admin *sql.DB
}

// setup opens a fresh database with an orders table and registers the
// end-of-test checks: no goroutine left (last, after the pools are closed),
// no advisory lock left, no connection of db or admin left in use.
func setup(t *testing.T, driver string) *env {
	t.Helper()
	t.Cleanup(func() { testkit.VerifyNone(t) })
	dsn := itest.DSN(t)
	e := &env{dsn: dsn, db: itest.OpenDSN(t, driver, dsn), admin: itest.OpenDSN(t, "postgres", dsn)}
	t.Cleanup(func() {
		testkit.WaitNoAdvisoryLocks(t, e.admin)
		testkit.WaitConnsIdle(t, e.db)
		testkit.WaitConnsIdle(t, e.admin)
	})
	if _, err := e.db.Exec(`CREATE TABLE orders (id int PRIMARY KEY, value int NOT NULL DEFAULT 0)`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Exec(`INSERT INTO orders (id) SELECT g FROM generate_series(1, 10) g`); err != nil {
		t.Fatal(err)
	}
	return e
}

func timeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// hold takes key on the admin pool (another session) and releases it on
// cleanup unless release is called first.
func (e *env) hold(t *testing.T, key keyspace.Key) (release func()) {
	t.Helper()
	lease, err := advisory.New(e.admin).Lock(timeout(t, 10*time.Second), key)
	if err != nil {
		t.Fatalf("hold %v: %v", key, err)
	}
	release = func() { _ = lease.Release(context.Background()) }
	t.Cleanup(release)
	return release
}

// waiting counts the sessions waiting (not granted) for key.
func (e *env) waiting(t *testing.T, key keyspace.Key) int {
	t.Helper()
	locks, err := testkit.AdvisoryLocks(timeout(t, 10*time.Second), e.admin)
	if err != nil {
		t.Fatalf("pg_locks: %v", err)
	}
	c, o, s := key.Lock()
	n := 0
	for _, l := range locks {
		if !l.Granted && l.ClassID == c && l.ObjID == o && l.ObjSubID == s {
			n++
		}
	}
	return n
}

// value reads the value of order id.
func (e *env) value(t *testing.T, id int) int {
	t.Helper()
	var v int
	if err := e.admin.QueryRowContext(timeout(t, 10*time.Second), `SELECT value FROM orders WHERE id = $1`, id).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
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

// querier is what the read-modify-write handler needs: *sql.DB or *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// increment is the racy read-modify-write: read the order's value, work a
// moment (so that concurrent requests certainly interleave), write value+1.
func increment(ctx context.Context, q querier, id int) error {
	var v int
	if err := q.QueryRowContext(ctx, `SELECT value FROM orders WHERE id = $1`, id).Scan(&v); err != nil {
		return err
	}
	time.Sleep(time.Millisecond) // simulated work between read and write, not synchronisation
	_, err := q.ExecContext(ctx, `UPDATE orders SET value = $1 WHERE id = $2`, v+1, id)
	return err
}

// response is what a test request got back.
type response struct {
	status     int
	retryAfter string
	body       string
}

// do sends one request and reads the whole answer.
func do(t *testing.T, c *http.Client, method, url string) response {
	t.Helper()
	r, err := send(timeout(t, 30*time.Second), c, method, url)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

func send(ctx context.Context, c *http.Client, method, url string) (response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return response{}, err
	}
	res, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return response{res.StatusCode, res.Header.Get("Retry-After"), strings.TrimSpace(string(b))}, err
}

// sendRetrying sends until the answer is not 409 or 503, waiting between
// tries as Retry-After says, jittered by ±50% so that the refused clients do
// not all come back at once. Every refusal must carry Retry-After.
func sendRetrying(ctx context.Context, c *http.Client, method, url string) (response, int, error) {
	tries := 0
	for {
		tries++
		r, err := send(ctx, c, method, url)
		if err != nil {
			return r, tries, err
		}
		if r.status != http.StatusConflict && r.status != http.StatusServiceUnavailable {
			return r, tries, nil
		}
		secs, err := strconv.Atoi(r.retryAfter)
		if err != nil || secs < 1 {
			return r, tries, fmt.Errorf("%d with Retry-After %q", r.status, r.retryAfter)
		}
		pause := time.Duration(secs) * time.Second
		select {
		case <-ctx.Done():
			return r, tries, ctx.Err()
		case <-time.After(pause/2 + rand.N(pause)):
		}
	}
}

// serve starts an httptest server for h, closed on cleanup.
func serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}
