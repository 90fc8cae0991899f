package mocktest

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/middleware"
)

var strictNS = keyspace.MustNamespace("mocktest-strict", 7301)

// TestStrict: a call that no expectation matches fails the test at cleanup,
// also when the code under test swallows the failure, and the failure says
// what was sent and what was expected; Lenient turns that off; errors that
// expectations were told to return are no such call.
func TestStrict(t *testing.T) {
	ctx := context.Background()
	key := strictNS.ID(42)
	cases := []struct {
		name string
		opts []Option
		run  func(t *testing.T, db *sql.DB, m *Mock)
		want []string // in the test's failure; none: the test passes
	}{
		{"forgotten ExpectUnlock", nil, func(t *testing.T, db *sql.DB, m *Mock) {
			m.ExpectLock(key)
			lease, err := m.Locker().Lock(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			_ = lease.Release(ctx) // swallowed, as a middleware that logs it does
		}, []string{"1 call(s)", "advisory's release of (7301,42), which ExpectUnlock expects",
			"expected nothing more: every expectation had been met"}},

		{"forgotten ExpectUnlock, lenient", []Option{Lenient()}, func(t *testing.T, db *sql.DB, m *Mock) {
			m.ExpectLock(key)
			lease, err := m.Locker().Lock(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if err := lease.Release(ctx); err == nil {
				t.Error("the unexpected release succeeded")
			}
		}, nil},

		{"release before the expected update", nil, func(t *testing.T, db *sql.DB, m *Mock) {
			m.ExpectLock(key)
			m.ExpectExec("UPDATE orders SET paid = true").WillReturnResult(sqlmock.NewResult(0, 1))
			m.ExpectUnlock(key, true)
			lease, err := m.Locker().Lock(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			_ = lease.Release(ctx)
		}, []string{"advisory's release of (7301,42)", `expected "UPDATE orders SET paid = true"`,
			"there is a remaining expectation"}},

		{"middleware with a wrong key", nil, func(t *testing.T, db *sql.DB, m *Mock) {
			m.ExpectTryLock(strictNS.ID(41), true) // the request is for 42
			m.ExpectUnlock(strictNS.ID(41), true)
			mux := http.NewServeMux()
			mux.Handle("PUT /orders/{id}", middleware.Lock(m.Locker(), middleware.PathID(strictNS, "id"))(
				http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPut, "/orders/42", nil))
			if rec.Code != http.StatusServiceUnavailable {
				t.Errorf("status %d, want the 503 of a refused statement", rec.Code)
			}
		}, []string{"advisory's try-lock of (7301,42), which ExpectLock or ExpectTryLock expects",
			"expected the same statement with other arguments", "expected [int64 - 41] does not match actual [int64 - 42]"}},

		{"wrong kind of expectation next", nil, func(t *testing.T, db *sql.DB, m *Mock) {
			m.ExpectXactLock(key)
			lease, err := m.Locker().Lock(ctx, key)
			if err == nil {
				_ = lease.Release(ctx)
			}
		}, []string{"advisory's try-lock of (7301,42), which ExpectLock or ExpectTryLock expects", "expected the statement of ExpectXactLock"}},

		{"failure modes are no refusals", []Option{WithLockTimeout(time.Second)}, func(t *testing.T, db *sql.DB, m *Mock) {
			m.ExpectLockTimeout(key)
			m.ExpectBegin()
			m.ExpectExec("UPDATE orders SET paid = true").WillReturnError(errors.New("boom"))
			m.ExpectRollback()
			if _, err := m.Locker().Lock(ctx, key); !errors.Is(err, advisory.ErrLockTimeout) {
				t.Errorf("Lock = %v, want ErrLockTimeout", err)
			}
			tx, err := db.Begin()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec("UPDATE orders SET paid = true"); err == nil {
				t.Error("the update did not fail")
			}
			if err := tx.Rollback(); err != nil {
				t.Error(err)
			}
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ft := &fakeT{}
			db, m := newMock(ft, tc.opts...)
			tc.run(t, db, m)
			ft.end()
			got := strings.Join(ft.errors, "\n")
			if len(tc.want) == 0 {
				if got != "" {
					t.Fatalf("the test failed:\n%s", got)
				}
				return
			}
			if len(ft.errors) != 1 || !strings.HasPrefix(got, "mocktest: ") || strings.Count(got, "mocktest: ") != 1 {
				t.Fatalf("want one failure that names the package once, got:\n%s", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("failure does not say %q:\n%s", w, got)
				}
			}
			t.Logf("the failure:\n%s", got)
		})
	}
}

// TestRefusals pins the go-sqlmock messages that isRefusal knows: each kind
// of call that no expectation matches is noted once, with what was
// expected.
func TestRefusals(t *testing.T) {
	cases := []struct {
		name     string
		expect   func(m *Mock)
		call     func(db *sql.DB) error
		expected string
	}{
		{"exec, none left", func(m *Mock) {}, func(db *sql.DB) error {
			_, err := db.Exec("DELETE FROM t")
			return err
		}, "nothing more"},
		{"query, an exec next", func(m *Mock) { m.ExpectExec("DELETE FROM t") }, func(db *sql.DB) error {
			_, err := db.Query("SELECT 1")
			return err
		}, `"DELETE FROM t"`},
		{"other SQL", func(m *Mock) { m.ExpectExec("DELETE FROM t") }, func(db *sql.DB) error {
			_, err := db.Exec("DELETE FROM u")
			return err
		}, `"DELETE FROM t"`},
		{"other arguments", func(m *Mock) { m.ExpectExec("DELETE FROM t WHERE id = $1").WithArgs(1) }, func(db *sql.DB) error {
			_, err := db.Exec("DELETE FROM t WHERE id = $1", 2)
			return err
		}, "the same statement with other arguments"},
		{"no result set", func(m *Mock) { m.ExpectExec("DELETE FROM t") }, func(db *sql.DB) error {
			_, err := db.Exec("DELETE FROM t")
			return err
		}, "has no WillReturnResult"},
		{"begin", func(m *Mock) {}, func(db *sql.DB) error {
			_, err := db.Begin()
			return err
		}, "nothing more"},
		{"commit", func(m *Mock) { m.ExpectBegin() }, func(db *sql.DB) error {
			tx, err := db.Begin()
			if err != nil {
				return nil // not the call under test
			}
			return tx.Commit()
		}, "nothing more"},
		{"rollback, a commit next", func(m *Mock) { m.ExpectBegin(); m.ExpectCommit() }, func(db *sql.DB) error {
			tx, err := db.Begin()
			if err != nil {
				return nil
			}
			return tx.Rollback()
		}, "what ExpectCommit expects"},
		{"prepare", func(m *Mock) {}, func(db *sql.DB) error {
			_, err := db.Prepare("SELECT 1")
			return err
		}, "nothing more"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, m, err := Open()
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			tc.expect(m)
			if err := tc.call(db); err == nil {
				t.Fatal("the call succeeded")
			}
			m.mu.Lock()
			rs := append([]refusal(nil), m.refusals...)
			m.mu.Unlock()
			if len(rs) != 1 {
				t.Fatalf("%d refusals noted, want 1: %+v", len(rs), rs)
			}
			if got := rs[0].expected(); !strings.Contains(got, tc.expected) {
				t.Fatalf("expected() = %q, want it to say %q (sqlmock: %v)", got, tc.expected, rs[0].err)
			}
		})
	}
}
