package itest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// Drivers are the database/sql driver names every integration test runs
// under: lib/pq and pgx's stdlib.
var Drivers = []string{"postgres", "pgx"}

// shared is the one server of this test binary.
var shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Main runs the tests of a package and then stops the shared server. Call it
// from TestMain:
//
//	func TestMain(m *testing.M) { itest.Main(m) }
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main without the exit: it runs the tests, stops the shared server
// and returns the exit code, for a TestMain that checks more afterwards.
func Run(m *testing.M) int {
	code := m.Run()
	if err := closeShared(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

func closeShared() error {
	if shared.srv == nil {
		return nil
	}
	return shared.srv.Close()
}

// inCI reports whether integration tests must run rather than skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// unavailable skips tb, or fails it under CI=true.
func unavailable(tb testing.TB, err error) {
	tb.Helper()
	if inCI() {
		tb.Fatalf("itest: CI=true and no PostgreSQL: %v", err)
	}
	tb.Skipf("itest: no PostgreSQL, skipping: %v", err)
}

// Shared returns the test binary's server, starting it on first use.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		shared.srv, shared.err = Start(ctx, Config{Logf: func(f string, a ...any) {
			fmt.Fprintf(os.Stderr, f+"\n", a...)
		}})
	})
	if shared.err != nil {
		unavailable(tb, shared.err)
	}
	return shared.srv
}

// NewServer starts a server of the test's own, for tests that restart it or
// need settings the shared one lacks; it is closed on cleanup. An empty
// cfg.Mode picks docker or local (never the env server, which cannot be
// restarted or reconfigured).
func NewServer(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if cfg.Logf == nil {
		cfg.Logf = tb.Logf
	}
	var (
		s   *Server
		err error
	)
	if cfg.Mode == "" && os.Getenv(EnvMode) == "" {
		for _, m := range []Mode{ModeDocker, ModeLocal} {
			c := cfg
			c.Mode = m
			if s, err = Start(ctx, c); err == nil {
				break
			}
		}
	} else {
		s, err = Start(ctx, cfg)
	}
	if err != nil {
		unavailable(tb, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("itest: closing server: %v", err)
		}
	})
	return s
}

// NewDatabase creates a fresh database on s, returns its DSN, and drops it
// on cleanup (after terminating any session still connected to it).
func (s *Server) NewDatabase(tb testing.TB) string {
	tb.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "itest_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := sql.Open("postgres", s.DSN(""))
	if err != nil {
		tb.Fatalf("itest: %v", err)
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("itest: create database: %v", err)
	}
	tb.Cleanup(func() { s.dropDatabase(tb, name) })
	return s.DSN(name)
}

func (s *Server) dropDatabase(tb testing.TB, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := sql.Open("postgres", s.DSN(""))
	if err != nil {
		tb.Errorf("itest: %v", err)
		return
	}
	defer admin.Close()
	// WITH (FORCE) terminates leftover sessions (PostgreSQL 13+). A server that
	// a test restarted may still be coming up: retry briefly.
	var lastErr error
	for i := 0; i < 50; i++ {
		if _, lastErr = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); lastErr == nil {
			return
		}
		select {
		case <-ctx.Done():
			tb.Errorf("itest: drop database %s: %v", name, lastErr)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	tb.Errorf("itest: drop database %s: %v", name, lastErr)
}

// DSN returns the DSN of a fresh database on the shared server.
func DSN(tb testing.TB) string {
	tb.Helper()
	return Shared(tb).NewDatabase(tb)
}

// Open opens a fresh database on the shared server with driver ("postgres"
// or "pgx"); the *sql.DB is closed on cleanup.
func Open(tb testing.TB, driver string) *sql.DB {
	tb.Helper()
	return OpenDSN(tb, driver, DSN(tb))
}

// OpenDSN opens dsn with driver and closes the *sql.DB on cleanup. It fails
// the test if the database does not answer.
func OpenDSN(tb testing.TB, driver, dsn string) *sql.DB {
	tb.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		tb.Fatalf("itest: open %s: %v", driver, err)
	}
	tb.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		tb.Fatalf("itest: ping %s: %v", driver, err)
	}
	return db
}

// EachDriver runs fn as a subtest per supported driver.
func EachDriver(t *testing.T, fn func(t *testing.T, driver string)) {
	t.Helper()
	for _, d := range Drivers {
		t.Run(d, func(t *testing.T) { fn(t, d) })
	}
}
