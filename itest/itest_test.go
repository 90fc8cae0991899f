package itest_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
)

// TestMain is in pgbouncer_test.go (testkit.Main).

// ctxT is a context bounded by the test's own deadline budget.
func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// setting reads a server parameter.
func setting(t *testing.T, db *sql.DB, name string) string {
	t.Helper()
	var v string
	if err := db.QueryRowContext(ctxT(t, 30*time.Second), "SELECT current_setting($1)", name).Scan(&v); err != nil {
		t.Fatalf("current_setting(%s): %v", name, err)
	}
	return v
}

// checkEnvMode points PGADVISORY_TEST_DSN at own, a server that itest
// started, and checks that ModeEnv uses it as it is and refuses to manage it.
func checkEnvMode(t *testing.T, own *itest.Server) {
	t.Setenv(itest.EnvDSN, own.DSN("")+"&application_name=itest-env")
	t.Setenv(itest.EnvMode, "")

	ctx := ctxT(t, time.Minute)
	for _, cfg := range []itest.Config{{Mode: itest.ModeEnv}, {}} { // forced, and first in the default order
		s, err := itest.Start(ctx, cfg)
		if err != nil {
			t.Fatalf("Start(%+v): %v", cfg, err)
		}
		if s.Mode() != itest.ModeEnv || s.Addr() != own.Addr() {
			t.Fatalf("Start(%+v) = %s at %s, want env at %s", cfg, s.Mode(), s.Addr(), own.Addr())
		}
		if !strings.Contains(s.DSN("x"), "application_name=itest-env") {
			t.Errorf("DSN %q lost the env DSN's parameters", s.DSN("x"))
		}
		if err := s.Restart(ctx); err == nil {
			t.Error("Restart of an env server succeeded, want an error")
		}
		if err := s.Pause(ctx); err == nil {
			t.Error("Pause of an env server succeeded, want an error")
		}
		if err := s.RestartImmediate(ctx); err == nil {
			t.Error("RestartImmediate of an env server succeeded, want an error")
		}
		if err := s.KillBackend(ctx, 1); err == nil {
			t.Error("KillBackend on an env server succeeded, want an error")
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	// Closing the env server left the server itself alone.
	itest.EachDriver(t, func(t *testing.T, driver string) {
		db := itest.OpenDSN(t, driver, own.NewDatabase(t)) // fails the test if it does not answer
		if got := setting(t, db, "max_locks_per_transaction"); got != "97" {
			t.Errorf("max_locks_per_transaction = %s, want the 97 own runs with", got)
		}
		testkit.WaitConnsIdle(t, db)
	})
}

// TestModeEnv: ModeEnv without a usable DSN, and an unknown mode, are errors.
// (ModeEnv with a DSN is checked in TestModeLocal, against its server.)
func TestModeEnv(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	t.Setenv(itest.EnvMode, "")
	t.Setenv(itest.EnvDSN, "")
	if _, err := itest.Start(ctx, itest.Config{Mode: itest.ModeEnv}); !errors.Is(err, itest.ErrNoServer) {
		t.Errorf("Start(env) without a DSN = %v, want ErrNoServer", err)
	}
	t.Setenv(itest.EnvDSN, "mysql://nope")
	if _, err := itest.Start(ctx, itest.Config{Mode: itest.ModeEnv}); !errors.Is(err, itest.ErrNoServer) {
		t.Errorf("Start(env) with a bad DSN = %v, want ErrNoServer", err)
	}
	if _, err := itest.Start(ctx, itest.Config{Mode: "carrier-pigeon"}); err == nil {
		t.Error("Start with an unknown mode succeeded")
	}
}

// exerciseServer checks settings, sessions cut by Restart, data kept across
// it, and the address unchanged, on both drivers.
func exerciseServer(t *testing.T, s *itest.Server) {
	dsn := s.NewDatabase(t)
	addr := s.Addr()
	type held struct {
		db   *sql.DB
		conn *sql.Conn
		pid  int
	}
	sessions := map[string]held{}
	ctx := ctxT(t, 2*time.Minute)
	for i, driver := range itest.Drivers {
		db := itest.OpenDSN(t, driver, dsn)
		if got := setting(t, db, "max_locks_per_transaction"); got != "97" {
			t.Errorf("%s: max_locks_per_transaction = %s, want 97 from Config.Settings", driver, got)
		}
		if got := setting(t, db, "fsync"); got != "off" {
			t.Errorf("%s: fsync = %s, want the default off", driver, got)
		}
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var pid int
		if err := conn.QueryRowContext(ctx, "SELECT pg_backend_pid() FROM (SELECT pg_advisory_lock($1::int8)) l", int64(4242+i)).Scan(&pid); err != nil {
			t.Fatalf("%s: lock: %v", driver, err)
		}
		sessions[driver] = held{db, conn, pid}
	}
	if _, err := sessions["postgres"].conn.ExecContext(ctx, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)"); err != nil {
		t.Fatal(err)
	}

	begin := time.Now()
	if err := s.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	t.Logf("%s restart took %v", s.Mode(), time.Since(begin).Round(time.Millisecond))
	if s.Addr() != addr {
		t.Fatalf("address after Restart = %s, want %s", s.Addr(), addr)
	}

	for _, driver := range itest.Drivers {
		t.Run(driver, func(t *testing.T) {
			h := sessions[driver]
			if err := h.conn.QueryRowContext(ctx, "SELECT 1").Scan(new(int)); err == nil {
				t.Error("a session from before Restart still answers")
			}
			h.conn.Close()
			db := itest.OpenDSN(t, driver, dsn)
			var v, pid int
			if err := db.QueryRowContext(ctx, "SELECT v, pg_backend_pid() FROM kept").Scan(&v, &pid); err != nil || v != 7 {
				t.Fatalf("data after Restart: v=%d err=%v", v, err)
			}
			if pid == h.pid {
				t.Errorf("new session has the old backend pid %d", pid)
			}
			testkit.WaitNoAdvisoryLocks(t, db)
			testkit.WaitConnsIdle(t, db)
			testkit.WaitConnsIdle(t, h.db)
		})
	}
}

// checkCrash: KillBackend ends every session (the postmaster reinitialises
// after a backend's SIGKILL) and the server comes back with its committed
// data; it refuses a process that is not a backend. RestartImmediate does
// the same with a new postmaster.
func checkCrash(t *testing.T, s *itest.Server) {
	ctx := ctxT(t, 2*time.Minute)
	db := itest.OpenDSN(t, "postgres", s.NewDatabase(t))
	// itest's servers run with synchronous_commit off, whose commits a crash
	// may lose: this one must be written out before the crash.
	if _, err := db.ExecContext(ctx, "BEGIN; SET LOCAL synchronous_commit = on; CREATE TABLE kept (v int); INSERT INTO kept VALUES (7); COMMIT"); err != nil {
		t.Fatal(err)
	}
	if s.Mode() == itest.ModeLocal {
		if err := s.KillBackend(ctx, os.Getpid()); err == nil {
			t.Fatal("KillBackend of the test binary succeeded, want an error")
		}
	}
	for _, crash := range []string{"KillBackend", "RestartImmediate"} {
		victim, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		bystander, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var pid int
		if err := victim.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		if err := bystander.PingContext(ctx); err != nil {
			t.Fatal(err)
		}
		if crash == "KillBackend" {
			err = s.KillBackend(ctx, pid)
		} else {
			err = s.RestartImmediate(ctx)
		}
		if err != nil {
			t.Fatalf("%s: %v", crash, err)
		}
		if err := bystander.QueryRowContext(ctx, "SELECT 1").Scan(new(int)); err == nil {
			t.Errorf("%s: another session still answers", crash)
		}
		victim.Close()
		bystander.Close()
		var v int
		if err := db.QueryRowContext(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != 7 {
			t.Fatalf("%s: data after recovery: v=%d err=%v", crash, v, err)
		}
	}
	testkit.WaitConnsIdle(t, db)
}

// TestModeLocal: a cluster from local binaries: settings, Restart, the same
// server used through PGADVISORY_TEST_DSN, and everything gone after Close.
func TestModeLocal(t *testing.T) {
	s := itest.NewServer(t, itest.Config{Mode: itest.ModeLocal, Settings: map[string]string{"max_locks_per_transaction": "97"}})
	if s.Mode() != itest.ModeLocal {
		t.Fatalf("mode %s", s.Mode())
	}
	if err := s.Pause(ctxT(t, time.Second)); err == nil {
		t.Error("Pause of a local server succeeded, want an error")
	}
	t.Run("restart", func(t *testing.T) { exerciseServer(t, s) })
	t.Run("crash", func(t *testing.T) { checkCrash(t, s) })
	t.Run("env", func(t *testing.T) { checkEnvMode(t, s) })
	t.Run("cleanup", func(t *testing.T) { checkLocalCleanup(t, s) })
}

// TestModeDocker: the locally built image through dockertest: settings,
// Restart, Pause, and everything gone after Close.
func TestModeDocker(t *testing.T) {
	s := itest.NewServer(t, itest.Config{Mode: itest.ModeDocker, Settings: map[string]string{"max_locks_per_transaction": "97"}})
	if s.Mode() != itest.ModeDocker || s.ContainerID() == "" {
		t.Fatalf("mode %s, container %q", s.Mode(), s.ContainerID())
	}
	if os.Getenv(itest.EnvImage) == "" {
		if img := containerImage(t, s.ContainerID()); img != itest.LocalImage {
			t.Errorf("container runs %s, want the locally built %s", img, itest.LocalImage)
		}
	}
	t.Run("restart", func(t *testing.T) { exerciseServer(t, s) })
	t.Run("crash", func(t *testing.T) { checkCrash(t, s) })
	t.Run("pause", func(t *testing.T) { checkPause(t, s) })
	t.Run("cleanup", func(t *testing.T) { checkDockerCleanup(t, s) })
}

// checkPause shows that Pause is a partition: the connection stays up
// and nothing answers. pgx gives up when the query's context ends; lib/pq does
// not (its cancel request waits for the frozen server, and so does the
// query), which is why code that must notice a partition cannot rely on the
// context of a lib/pq call. After Unpause the server answers again and every
// pending call returns.
func checkPause(t *testing.T, s *itest.Server) {
	dsn := s.NewDatabase(t)
	dbs := map[string]*sql.DB{}
	for _, driver := range itest.Drivers {
		dbs[driver] = itest.OpenDSN(t, driver, dsn)
	}
	ctx := ctxT(t, 2*time.Minute)
	if err := s.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	unpaused := false
	defer func() {
		if !unpaused {
			_ = s.Unpause(context.Background())
		}
	}()
	const deadline = 500 * time.Millisecond
	pending := map[string]chan error{}
	for _, driver := range itest.Drivers {
		done := make(chan error, 1)
		pending[driver] = done
		go func() {
			qctx, cancel := context.WithTimeout(ctx, deadline)
			defer cancel()
			done <- dbs[driver].QueryRowContext(qctx, "SELECT 1").Scan(new(int))
		}()
	}
	begin := time.Now()
	select {
	case err := <-pending["pgx"]:
		took := time.Since(begin)
		if err == nil || took < deadline*8/10 {
			t.Errorf("pgx on a paused server: %v after %v, want an error when the context ends", err, took)
		}
		t.Logf("pgx: query on the paused server ended after %v: %v", took.Round(time.Millisecond), err)
		delete(pending, "pgx")
	case <-time.After(20 * time.Second):
		t.Error("pgx: query on the paused server did not end with its context")
	}
	select {
	case err := <-pending["postgres"]:
		t.Logf("lib/pq: query on the paused server ended after %v: %v", time.Since(begin).Round(time.Millisecond), err)
		if err == nil {
			t.Error("lib/pq: a paused server answered")
		}
		delete(pending, "postgres")
	case <-time.After(2 * time.Second):
		t.Logf("lib/pq: query with a %v context still blocked after %v on the paused server", deadline, time.Since(begin).Round(time.Millisecond))
	}

	if err := s.Unpause(ctx); err != nil {
		t.Fatal(err)
	}
	unpaused = true
	for driver, done := range pending {
		select {
		case err := <-done:
			t.Logf("%s: pending query returned after Unpause: %v", driver, err)
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: query still blocked 30 s after Unpause", driver)
		}
	}
	for _, driver := range itest.Drivers {
		t.Run(driver, func(t *testing.T) {
			db := dbs[driver]
			wait := time.Now().Add(30 * time.Second)
			for {
				err := db.QueryRowContext(ctx, "SELECT 1").Scan(new(int))
				if err == nil {
					break
				}
				if time.Now().After(wait) {
					t.Fatalf("no answer after Unpause: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			testkit.WaitConnsIdle(t, db)
		})
	}
}

// recTB records what Unavailable decides instead of acting on it; like the
// real ones, its Fatalf and Skipf end the goroutine that calls them.
type recTB struct {
	testing.TB
	fatal, skip bool
}

func (r *recTB) Helper()               {}
func (r *recTB) Fatalf(string, ...any) { r.fatal = true; runtime.Goexit() }
func (r *recTB) Skipf(string, ...any)  { r.skip = true; runtime.Goexit() }

// decide runs Unavailable on a recorder in a goroutine of its own.
func decide(t testing.TB, err error) *recTB {
	r := &recTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		itest.Unavailable(r, err)
	}()
	<-done
	return r
}

// TestMissingImage: a docker image that is not there and cannot be pulled
// fails fast, and under CI=true that fails the test instead of skipping it.
func TestMissingImage(t *testing.T) {
	t.Setenv(itest.EnvImage, "pgadvisory/no-such-image:0")
	begin := time.Now()
	_, err := itest.Start(ctxT(t, time.Minute), itest.Config{Mode: itest.ModeDocker})
	if err == nil {
		t.Fatal("Start with a missing image succeeded")
	}
	t.Logf("failed after %v: %v", time.Since(begin).Round(time.Millisecond), err)
	if !errors.Is(err, itest.ErrNoServer) {
		t.Errorf("error %v is not ErrNoServer", err)
	}
	if time.Since(begin) > 30*time.Second {
		t.Errorf("a missing image took %v to fail", time.Since(begin))
	}
	for _, ci := range []string{"true", ""} {
		t.Setenv("CI", ci)
		r := decide(t, err)
		if r.fatal != (ci == "true") || r.skip != (ci != "true") {
			t.Errorf("CI=%q: fatal=%v skip=%v", ci, r.fatal, r.skip)
		}
	}
}
