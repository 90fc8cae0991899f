package soak_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/middleware"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// Bad input across the public API: each case names the clear error it must
// get, and no case may panic.

// fakeDriver is a database/sql driver that is not PostgreSQL: every query
// answers one row with one column (answer "row"), or fails with an error
// that does not come from PostgreSQL (answer "error").
type fakeDriver struct{ answer string }

func (d fakeDriver) Open(string) (driver.Conn, error) { return fakeConn(d), nil }

type fakeConn fakeDriver

func (c fakeConn) Prepare(q string) (driver.Stmt, error) { return fakeStmt(c), nil }
func (c fakeConn) Close() error                          { return nil }
func (c fakeConn) Begin() (driver.Tx, error)             { return fakeTx{}, nil }

type fakeTx struct{}

func (fakeTx) Commit() error   { return nil }
func (fakeTx) Rollback() error { return nil }

type fakeStmt fakeConn

func (s fakeStmt) Close() error  { return nil }
func (s fakeStmt) NumInput() int { return -1 }
func (s fakeStmt) Exec([]driver.Value) (driver.Result, error) {
	return driver.RowsAffected(0), nil
}
func (s fakeStmt) Query([]driver.Value) (driver.Rows, error) {
	if s.answer == "error" {
		return nil, errors.New("fakesql: unknown function pg_advisory_lock")
	}
	return &fakeRows{}, nil
}

type fakeRows struct{ done bool }

func (r *fakeRows) Columns() []string { return []string{"x"} }
func (r *fakeRows) Close() error      { return nil }
func (r *fakeRows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	dest[0] = "not a lock answer"
	return nil
}

var registerFakes sync.Once

// fakeDB opens a *sql.DB on the fake driver that answers as told.
func fakeDB(t *testing.T, answer string) *sql.DB {
	t.Helper()
	registerFakes.Do(func() {
		sql.Register("fakesql-row", fakeDriver{answer: "row"})
		sql.Register("fakesql-error", fakeDriver{answer: "error"})
	})
	db, err := sql.Open("fakesql-"+answer, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// badCase is one bad input: call must return an error that wants accepts.
type badCase struct {
	name string
	call func(ctx context.Context) error
	want func(err error) bool
	says string // what the error must be, for the failure message
}

// is accepts errors that match target with errors.Is.
func is(target error) (func(error) bool, string) {
	return func(err error) bool { return errors.Is(err, target) }, fmt.Sprintf("errors.Is %q", target)
}

// prefixed accepts errors that start with the package prefix and contain
// every fragment.
func prefixed(prefix string, fragments ...string) (func(error) bool, string) {
	return func(err error) bool {
			if err == nil || !strings.HasPrefix(err.Error(), prefix) {
				return false
			}
			for _, f := range fragments {
				if !strings.Contains(err.Error(), f) {
					return false
				}
			}
			return true
		}, fmt.Sprintf("an error starting %q containing %q", prefix,
			fragments)
}

func bad(name string, call func(ctx context.Context) error, want func(error) bool, says string) badCase {
	return badCase{name: name, call: call, want: want, says: says}
}

// runBad runs the cases, each with a bounded context, turning a panic into a
// failure.
func runBad(t *testing.T, cases []badCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("panic escaped the public API: %v", p)
					}
				}()
				err = c.call(ctx)
			}()
			if !c.want(err) {
				t.Fatalf("got %v; want %s", err, c.says)
			}
			t.Logf("%v", err)
		})
	}
}

var badKey = keyspace.Int64(424242)

// lockErr adapts a call that returns a lease.
func lockErr(f func(context.Context, keyspace.Key) (*advisory.Lease, error)) func(context.Context) error {
	return func(ctx context.Context) error {
		ls, err := f(ctx, badKey)
		if ls != nil {
			ls.Release(ctx)
			return errors.New("got a lease")
		}
		return err
	}
}

func noop(context.Context) error { return nil }

// TestBadInputOffline covers what needs no server.
func TestBadInputOffline(t *testing.T) {
	nilLocker := advisory.New(nil)
	var nilPtr *advisory.Locker
	closed, err := sql.Open("pgx", "postgres://postgres@127.0.0.1:1/none?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	unreachable := func(driver string) *sql.DB {
		// A port on loopback where nothing listens: the connection is refused.
		db, err := sql.Open(driver, "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	fakeRow, fakeErr := fakeDB(t, "row"), fakeDB(t, "error")

	var cases []badCase
	add := func(name string, call func(context.Context) error, want func(error) bool, says string) {
		cases = append(cases, bad(name, call, want, says))
	}
	w, s := is(advisory.ErrNilDB)
	add("advisory/nil DB/Lock", lockErr(nilLocker.Lock), w, s)
	add("advisory/nil DB/TryLock", lockErr(nilLocker.TryLock), w, s)
	add("advisory/nil DB/LockShared", lockErr(nilLocker.LockShared), w, s)
	add("advisory/nil DB/TryLockShared", lockErr(nilLocker.TryLockShared), w, s)
	add("advisory/nil DB/LockAll", func(ctx context.Context) error {
		_, err := nilLocker.LockAll(ctx, badKey, keyspace.Int64(1))
		return err
	}, w, s)
	add("advisory/nil DB/Do", func(ctx context.Context) error { return nilLocker.Do(ctx, badKey, noop) }, w, s)
	add("advisory/nil Locker/Lock", lockErr(nilPtr.Lock), w, s)
	add("advisory/nil Locker/Do", func(ctx context.Context) error { return nilPtr.Do(ctx, badKey, noop) }, w, s)
	w, s = is(advisory.ErrNoKeys)
	add("advisory/LockAll without keys", func(ctx context.Context) error {
		_, err := advisory.New(unreachable("pgx")).LockAll(ctx)
		return err
	}, w, s)
	w, s = prefixed("advisory: ", "nil function")
	add("advisory/Do nil function", func(ctx context.Context) error {
		return advisory.New(unreachable("pgx")).Do(ctx, badKey, nil)
	}, w, s)
	w, s = prefixed("advisory: ", "database is closed")
	add("advisory/closed DB/Lock", lockErr(advisory.New(closed).Lock), w, s)
	add("advisory/closed DB/Do", func(ctx context.Context) error { return advisory.New(closed).Do(ctx, badKey, noop) }, w, s)
	for _, d := range itest.Drivers {
		w, s = prefixed("advisory: ", "127.0.0.1:1")
		add("advisory/unreachable server/"+d, lockErr(advisory.New(unreachable(d)).Lock), w, s)
	}
	w, s = is(context.Canceled)
	add("advisory/cancelled context", func(ctx context.Context) error {
		c, cancel := context.WithCancel(ctx)
		cancel()
		_, err := advisory.New(unreachable("pgx")).Lock(c, badKey)
		return err
	}, w, s)
	w, s = prefixed("advisory: ")
	add("advisory/not PostgreSQL/answers a row", lockErr(advisory.New(fakeRow).Lock), w, s)
	add("advisory/not PostgreSQL/answers an error", lockErr(advisory.New(fakeErr).Lock), w, s)
	add("advisory/not PostgreSQL/TryLock", lockErr(advisory.New(fakeRow).TryLock), w, s)
	add("advisory/not PostgreSQL/LockAll", func(ctx context.Context) error {
		_, err := advisory.New(fakeRow).LockAll(ctx, badKey, keyspace.Pair(1, 2))
		return err
	}, w, s)
	add("advisory/not PostgreSQL/Do", func(ctx context.Context) error { return advisory.New(fakeErr).Do(ctx, badKey, noop) }, w, s)
	add("advisory/Release nil lease", func(ctx context.Context) error {
		var ls *advisory.Lease
		return ls.Release(ctx)
	}, func(err error) bool { return err == nil }, "nil (documented: Release is nil-safe)")

	w, s = is(txlock.ErrNotTransaction)
	add("txlock/nil tx", func(ctx context.Context) error { return txlock.Lock(ctx, nil, badKey) }, w, s)
	add("txlock/nil *sql.Tx", func(ctx context.Context) error { return txlock.Lock(ctx, (*sql.Tx)(nil), badKey) }, w, s)
	add("txlock/*sql.DB as tx", func(ctx context.Context) error { return txlock.Lock(ctx, closed, badKey) }, w, s)
	add("txlock/TryLock nil tx", func(ctx context.Context) error { _, err := txlock.TryLock(ctx, nil, badKey); return err }, w, s)
	add("txlock/LockAll nil tx", func(ctx context.Context) error { return txlock.LockAll(ctx, nil, badKey) }, w, s)
	w, s = prefixed("txlock: ", "nil database")
	add("txlock/Do nil DB", func(ctx context.Context) error {
		return txlock.Do(ctx, nil, badKey, func(*sql.Tx) error { return nil })
	}, w, s)
	add("txlock/Do nil *sql.DB", func(ctx context.Context) error {
		return txlock.Do(ctx, (*sql.DB)(nil), badKey, func(*sql.Tx) error { return nil })
	}, w, s)
	w, s = prefixed("txlock: ", "nil function")
	add("txlock/Do nil function", func(ctx context.Context) error { return txlock.Do(ctx, unreachable("pgx"), badKey, nil) }, w, s)
	w, s = prefixed("txlock: ", "database is closed")
	add("txlock/Do closed DB", func(ctx context.Context) error {
		return txlock.Do(ctx, closed, badKey, func(*sql.Tx) error { return nil })
	}, w, s)
	w, s = prefixed("txlock: ")
	add("txlock/Do not PostgreSQL/answers a row", func(ctx context.Context) error {
		return txlock.Do(ctx, fakeRow, badKey, func(*sql.Tx) error { return nil })
	}, w, s)
	add("txlock/Do not PostgreSQL/answers an error", func(ctx context.Context) error {
		return txlock.Do(ctx, fakeErr, badKey, func(*sql.Tx) error { return nil })
	}, w, s)
	add("txlock/Do unreachable server", func(ctx context.Context) error {
		return txlock.Do(ctx, unreachable("postgres"), badKey, func(*sql.Tx) error { return nil })
	}, w, s)

	w, s = prefixed("keyspace: ", "empty")
	add("keyspace/empty namespace name", func(context.Context) error { _, err := keyspace.NewNamespace("", 1); return err }, w, s)
	w, s = prefixed("keyspace: ", "limit is 200")
	add("keyspace/huge namespace name", func(context.Context) error {
		_, err := keyspace.NewNamespace(strings.Repeat("n", 1<<20), 2)
		return err
	}, w, s)
	w, s = prefixed("keyspace: ", "UTF-8")
	add("keyspace/namespace name not UTF-8", func(context.Context) error { _, err := keyspace.NewNamespace("bad\xff", 3); return err }, w, s)
	w, s = prefixed("keyspace: ", "already registered")
	add("keyspace/duplicate namespace id", func(context.Context) error {
		if _, err := keyspace.NewNamespace("hardening-a", 910001); err != nil {
			return err
		}
		_, err := keyspace.NewNamespace("hardening-b", 910001)
		return err
	}, w, s)
	add("keyspace/duplicate namespace name", func(context.Context) error {
		if _, err := keyspace.NewNamespace("hardening-c", 910002); err != nil {
			return err
		}
		_, err := keyspace.NewNamespace("hardening-c", 910003)
		return err
	}, w, s)
	w, s = prefixed("keyspace: ", "limit is 64")
	add("keyspace/huge key text", func(context.Context) error { _, err := keyspace.Parse(strings.Repeat("1", 1<<20)); return err }, w, s)
	w, s = prefixed("keyspace: ", "empty")
	add("keyspace/empty key text", func(context.Context) error { _, err := keyspace.Parse(""); return err }, w, s)
	w, s = prefixed("keyspace: ", "objsubid 3")
	add("keyspace/pg_locks row of another kind", func(context.Context) error { _, err := keyspace.FromLock(1, 2, 3); return err }, w, s)

	runBad(t, cases)
}

// TestBadInputOnline covers what needs a server: misuse of a real
// transaction and of a real lease.
func TestBadInputOnline(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		db := itest.Open(t, driver)
		ctx := context.Background()
		committed, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := committed.Commit(); err != nil {
			t.Fatal(err)
		}
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var cases []badCase
		add := func(name string, call func(context.Context) error, want func(error) bool, says string) {
			cases = append(cases, bad(name, call, want, says))
		}
		w, s := is(sql.ErrTxDone)
		add("txlock/committed tx", func(ctx context.Context) error { return txlock.Lock(ctx, committed, badKey) }, w, s)
		add("txlock/LockAll committed tx", func(ctx context.Context) error {
			return txlock.LockAll(ctx, committed, badKey, keyspace.Int64(2))
		}, w, s)
		w, s = is(txlock.ErrNotTransaction)
		add("txlock/*sql.Conn as tx", func(ctx context.Context) error { return txlock.Lock(ctx, conn, badKey) }, w, s)
		add("txlock/open *sql.DB as tx", func(ctx context.Context) error { return txlock.Lock(ctx, db, badKey) }, w, s)
		w, s = is(txlock.ErrNoKeys)
		add("txlock/LockAll without keys", func(ctx context.Context) error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			return txlock.LockAll(ctx, tx)
		}, w, s)
		w, s = is(advisory.ErrReleased)
		add("advisory/second Release", func(ctx context.Context) error {
			ls, err := advisory.New(db).Lock(ctx, badKey)
			if err != nil {
				return err
			}
			if err := ls.Release(ctx); err != nil {
				return err
			}
			return ls.Release(ctx)
		}, w, s)
		add("advisory/Tx on a nil lease", func(ctx context.Context) error {
			var ls *advisory.Lease
			return ls.Tx(ctx, func(*sql.Tx) error { return nil })
		}, w, s)
		add("advisory/Tx after Release", func(ctx context.Context) error {
			ls, err := advisory.New(db).Lock(ctx, badKey)
			if err != nil {
				return err
			}
			if err := ls.Release(ctx); err != nil {
				return err
			}
			return ls.Tx(ctx, func(*sql.Tx) error { return errors.New("fn ran after Release") })
		}, w, s)
		w, s = prefixed("advisory: ", "nil function")
		add("advisory/Tx with a nil function", func(ctx context.Context) error {
			ls, err := advisory.New(db).Lock(ctx, badKey)
			if err != nil {
				return err
			}
			defer ls.Release(ctx)
			return ls.Tx(ctx, nil)
		}, w, s)
		w, s = is(advisory.ErrLockLost)
		add("advisory/Tx after the backend was terminated", func(ctx context.Context) error {
			ls, err := advisory.New(db, advisory.WithKeepAlive(50*time.Millisecond)).Lock(ctx, badKey)
			if err != nil {
				return err
			}
			defer ls.Release(ctx)
			testkit.TerminateBackend(t, db, ls.PID())
			return ls.Tx(ctx, func(*sql.Tx) error { return errors.New("fn ran on a dead session") })
		}, w, s)
		w, s = is(advisory.ErrNotAcquired)
		add("advisory/TryLock of a held key", func(ctx context.Context) error {
			l := advisory.New(db)
			ls, err := l.Lock(ctx, badKey)
			if err != nil {
				return err
			}
			defer ls.Release(ctx)
			other, err := l.TryLock(ctx, badKey)
			if other != nil {
				other.Release(ctx)
			}
			return err
		}, w, s)
		w, s = is(context.DeadlineExceeded)
		add("advisory/Lock past its deadline", func(ctx context.Context) error {
			l := advisory.New(db)
			ls, err := l.Lock(ctx, badKey)
			if err != nil {
				return err
			}
			defer ls.Release(ctx)
			c, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			other, err := l.Lock(c, badKey)
			if other != nil {
				other.Release(ctx)
			}
			return err
		}, w, s)
		runBad(t, cases)
		conn.Close()
		checkClean(t, db)
	})
}

// checkClean fails t if db's database has an advisory lock left or db has a
// connection in use.
func checkClean(t *testing.T, db *sql.DB) {
	t.Helper()
	testkit.WaitConnsIdle(t, db)
	testkit.WaitNoAdvisoryLocks(t, db)
}

// TestBadInputMiddleware: bad configuration panics when the middleware is
// built, with the package prefix (the chi convention, documented on each
// constructor); bad requests and bad calls get errors, never panics.
func TestBadInputMiddleware(t *testing.T) {
	ns := keyspace.MustNamespace("hardening-middleware", 910100)
	nilDB := advisory.New(nil)
	builds := []struct {
		name  string
		build func()
	}{
		{"PathValue without a name", func() { middleware.PathValue(ns, "") }},
		{"Lock with a nil Locker", func() { middleware.Lock(nil, middleware.PathValue(ns, "id")) }},
		{"Lock with a nil KeyFunc", func() { middleware.Lock(nilDB, nil) }},
		{"Lock around a nil handler", func() { middleware.Lock(nilDB, middleware.PathValue(ns, "id"))(nil) }},
		{"TxLock with a nil DB", func() { middleware.TxLock(nil, middleware.PathValue(ns, "id")) }},
		{"Singleton with a nil job", func() { middleware.Singleton(nilDB, badKey, nil) }},
		{"NewKeyed with a nil Locker", func() { middleware.NewKeyed(nil) }},
	}
	for _, b := range builds {
		t.Run("build/"+b.name, func(t *testing.T) {
			defer func() {
				p := recover()
				if s, _ := p.(string); !strings.HasPrefix(s, "middleware: ") {
					t.Fatalf("want a panic with the package prefix at build time, got %#v", p)
				}
				t.Logf("panics: %v", p)
			}()
			b.build()
		})
	}

	var cases []badCase
	add := func(name string, call func(context.Context) error, want func(error) bool, says string) {
		cases = append(cases, bad(name, call, want, says))
	}
	w, s := is(advisory.ErrNilDB)
	add("Singleton over a Locker without a DB", func(ctx context.Context) error {
		return middleware.Singleton(nilDB, badKey, noop)(ctx)
	}, w, s)
	add("Keyed over a Locker without a DB", func(ctx context.Context) error {
		return middleware.NewKeyed(nilDB).Handle(ctx, badKey, noop)
	}, w, s)
	w, s = prefixed("middleware: ", "nil function")
	add("Keyed.Handle with a nil function", func(ctx context.Context) error {
		return middleware.NewKeyed(nilDB).Handle(ctx, badKey, nil)
	}, w, s)
	w, s = is(context.Canceled)
	add("Keyed.Handle with a cancelled context", func(ctx context.Context) error {
		c, cancel := context.WithCancel(ctx)
		cancel()
		// A Locker with a DB (nothing listens there): the nil-DB error must
		// not hide which error this case is about.
		db, err := sql.Open("pgx", "postgres://postgres@127.0.0.1:1/none?sslmode=disable")
		if err != nil {
			return err
		}
		defer db.Close()
		return middleware.NewKeyed(advisory.New(db)).Handle(c, badKey, noop)
	}, w, s)
	statusIs := func(want int) (func(error) bool, string) {
		return func(err error) bool { return err == nil }, fmt.Sprintf("status %d", want)
	}
	request := func(h http.Handler, pattern, path string, want int) func(context.Context) error {
		return func(ctx context.Context) error {
			mux := http.NewServeMux()
			mux.Handle(pattern, h)
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodPost, path, nil))
			if rec.Code != want {
				return fmt.Errorf("status %d, body %q", rec.Code, rec.Body.String())
			}
			return nil
		}
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	lockMW := middleware.Lock(nilDB, middleware.PathValue(ns, "id"))(next)
	w, s = statusIs(http.StatusBadRequest)
	add("Lock: route without the path value", request(lockMW, "/orders/", "/orders/", http.StatusBadRequest), w, s)
	add("Lock: KeyFunc error", request(middleware.Lock(nilDB, func(*http.Request) (keyspace.Key, error) {
		return keyspace.Key{}, errors.New("no such order")
	})(next), "/x", "/x", http.StatusBadRequest), w, s)
	w, s = statusIs(http.StatusServiceUnavailable)
	add("Lock: Locker without a DB", request(lockMW, "/orders/{id}", "/orders/42", http.StatusServiceUnavailable), w, s)
	closed, err := sql.Open("pgx", "postgres://postgres@127.0.0.1:1/none?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	add("TxLock: closed DB", request(middleware.TxLock(closed, middleware.PathValue(ns, "id"))(next),
		"/orders/{id}", "/orders/42", http.StatusServiceUnavailable), w, s)
	runBad(t, cases)

	// The zero Keyed is not documented as usable; it must not panic either.
	t.Run("zero Keyed", func(t *testing.T) {
		defer func() {
			if p := recover(); p != nil {
				t.Errorf("(&middleware.Keyed{}).Handle panics: %v (NewKeyed is documented, but a zero value should fail with an error, or be usable)", p)
			}
		}()
		var k middleware.Keyed
		err := k.Handle(context.Background(), badKey, noop)
		if err == nil || !strings.HasPrefix(err.Error(), "middleware: ") {
			t.Errorf("zero Keyed: got %v, want an error with the middleware prefix", err)
		}
		t.Logf("zero Keyed: %v", err)
	})
}
