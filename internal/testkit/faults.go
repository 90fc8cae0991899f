package testkit

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"
)

// Faults on the server side. Every helper here acts only on backends of the
// database that db is connected to: the development server is shared, and
// other databases are other tests' business.

// Terminate ends backend pid with pg_terminate_backend, if it is a backend of
// db's database, and reports whether it was signalled. A pid that is gone
// already, or belongs to another database, gives false and no error.
func Terminate(ctx context.Context, db *sql.DB, pid int) (bool, error) {
	var ok sql.NullBool
	err := db.QueryRowContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE pid = $1::int4 AND datname = current_database() AND pid <> pg_backend_pid()`, pid).Scan(&ok)
	if err == sql.ErrNoRows {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("testkit: terminate backend %d: %w", pid, err)
	}
	return ok.Valid && ok.Bool, nil
}

// TerminateAll ends every backend of db's database except the one running
// the statement, and returns how many it signalled.
func TerminateAll(ctx context.Context, db *sql.DB) (int, error) {
	var n int
	err := db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("testkit: terminate backends: %w", err)
	}
	return n, nil
}

// Backends returns the pids of the client backends of db's database, but for
// the one running the statement.
func Backends(ctx context.Context, db *sql.DB) ([]int, error) {
	rows, err := db.QueryContext(ctx, `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
		ORDER BY pid`)
	if err != nil {
		return nil, fmt.Errorf("testkit: list backends: %w", err)
	}
	defer rows.Close()
	var pids []int
	for rows.Next() {
		var p int
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("testkit: list backends: %w", err)
		}
		pids = append(pids, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("testkit: list backends: %w", err)
	}
	return pids, nil
}

// TerminateBackend is Terminate for tests: it fails t if the statement fails
// or pid is not a live backend of db's database, and then waits (up to 10 s)
// until the backend has gone.
func TerminateBackend(t testing.TB, db *sql.DB, pid int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ok, err := Terminate(ctx, db, pid)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("testkit: backend %d is not a live backend of this database", pid)
	}
	WaitBackendGone(t, db, pid)
}

// TerminateOthers is TerminateAll for tests: it fails t if the statement
// fails, waits (up to 10 s) until the backends have gone, and returns how
// many there were.
func TerminateOthers(t testing.TB, db *sql.DB) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before, err := Backends(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	n, err := TerminateAll(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range before {
		WaitBackendGone(t, db, pid)
	}
	return n
}

// WaitBackendGone waits up to 10 s until pid no longer shows in
// pg_stat_activity (a terminated backend takes a moment to exit and to drop
// its locks), and fails t otherwise.
func WaitBackendGone(t testing.TB, db *sql.DB, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var alive bool
		err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1::int4)`, pid).Scan(&alive)
		cancel()
		if err == nil && !alive {
			return
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("testkit: waiting for backend %d to exit: %v", pid, err)
			}
			t.Fatalf("testkit: backend %d still alive 10 s after it was terminated", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
