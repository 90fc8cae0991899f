package itest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	// The two drivers the module supports, registered for every test that
	// uses itest: "postgres" (lib/pq) and "pgx" (pgx's stdlib).
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/lib/pq"
)

// Environment variables that steer itest.
const (
	EnvDSN   = "PGADVISORY_TEST_DSN"   // use this server instead of starting one
	EnvMode  = "PGADVISORY_TEST_MODE"  // force a path: env, docker or local
	EnvImage = "PGADVISORY_TEST_IMAGE" // the Docker image to run
)

// Mode is where a server comes from.
type Mode string

// The three ways to get a server, in the order tried.
const (
	ModeEnv    Mode = "env"
	ModeDocker Mode = "docker"
	ModeLocal  Mode = "local"
)

// Config says how to start a server. The zero Config tries every mode in
// order with default settings.
type Config struct {
	// Mode forces one way; empty tries env, docker, local in that order (or
	// the mode in PGADVISORY_TEST_MODE).
	Mode Mode
	// Settings are server parameters (postgres -c name=value), e.g.
	// max_locks_per_transaction. Ignored in ModeEnv, which uses the server
	// as it is.
	Settings map[string]string
	// Logf, if set, receives progress lines (which mode, how long it took).
	Logf func(format string, args ...any)
}

// Server is a running PostgreSQL. Its methods are safe for concurrent use.
type Server struct {
	mode Mode
	host string
	port int
	user string
	pass string
	// query holds extra DSN parameters (sslmode and the like from the env DSN).
	query url.Values

	mu      sync.Mutex
	closed  bool
	backend backend // nil in ModeEnv
}

// backend is what a started server needs for its lifecycle.
type backend interface {
	// restart stops the server and starts it again on the same address and data.
	restart(ctx context.Context) error
	// crash stops the server in immediate mode (SIGQUIT to the postmaster)
	// and starts it again, which runs crash recovery.
	crash(ctx context.Context) error
	// kill sends SIGKILL to one process of the server, a backend.
	kill(ctx context.Context, pid int) error
	// close stops the server and removes everything it made.
	close() error
}

// Mode reports where the server came from.
func (s *Server) Mode() Mode { return s.mode }

// Addr is host:port of the server, for tests that put a proxy in front of it.
func (s *Server) Addr() string { return net.JoinHostPort(s.host, strconv.Itoa(s.port)) }

// DSN returns a URL-form connection string for database on this server,
// accepted by lib/pq and pgx alike. An empty database names the maintenance
// database "postgres".
func (s *Server) DSN(database string) string {
	return s.DSNAt(s.Addr(), database)
}

// DSNAt is DSN with another host:port, for connecting through a proxy.
func (s *Server) DSNAt(addr, database string) string {
	if database == "" {
		database = "postgres"
	}
	u := url.URL{Scheme: "postgres", Host: addr, Path: "/" + database}
	if s.pass != "" {
		u.User = url.UserPassword(s.user, s.pass)
	} else {
		u.User = url.User(s.user)
	}
	q := url.Values{}
	for k, v := range s.query {
		q[k] = v
	}
	if q.Get("sslmode") == "" {
		q.Set("sslmode", "disable")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Restart stops the server and starts it again on the same address with the
// same data, as an operator's restart does: every session is cut. It is an
// error for a server from PGADVISORY_TEST_DSN, which itest does not own.
func (s *Server) Restart(ctx context.Context) error {
	if s.backend == nil {
		return fmt.Errorf("itest: cannot restart a %s server that itest did not start", s.mode)
	}
	return s.backend.restart(ctx)
}

// RestartImmediate stops the server in immediate mode, as a crash does: no
// checkpoint, and WAL still in the server's buffers (asynchronous commits
// not yet written by the WAL writer) is lost. It then starts the server again
// on the same address and data, which runs crash recovery, and returns once
// it accepts connections. It is an error for a server from
// PGADVISORY_TEST_DSN.
func (s *Server) RestartImmediate(ctx context.Context) error {
	if s.backend == nil {
		return fmt.Errorf("itest: cannot crash a %s server that itest did not start", s.mode)
	}
	return s.backend.crash(ctx)
}

// KillBackend sends SIGKILL to the backend with process id pid (as
// pg_backend_pid reports it), as the kernel's OOM killer does. The
// postmaster then ends every other session, reinitialises shared memory and
// runs crash recovery without restarting: WAL still in its buffers is lost.
// KillBackend returns once the server accepts connections again. It is an
// error for a server from PGADVISORY_TEST_DSN, and for a pid that is not a
// backend of this server (checked in ModeLocal).
func (s *Server) KillBackend(ctx context.Context, pid int) error {
	if s.backend == nil {
		return fmt.Errorf("itest: cannot kill a backend of a %s server that itest did not start", s.mode)
	}
	// A session of its own, to see the postmaster end every session: a
	// connection attempt right after the kill could still get in before the
	// postmaster has noticed.
	watch, err := sql.Open("postgres", s.DSN(""))
	if err != nil {
		return fmt.Errorf("itest: %w", err)
	}
	defer watch.Close()
	conn, err := watch.Conn(ctx)
	if err != nil {
		return fmt.Errorf("itest: %w", err)
	}
	defer conn.Close()
	var own int
	if err := conn.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&own); err != nil {
		return fmt.Errorf("itest: %w", err)
	}
	if own == pid {
		return fmt.Errorf("itest: %d is itest's own watching session", pid)
	}
	if err := s.backend.kill(ctx, pid); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for conn.PingContext(ctx) == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("itest: the server did not reset within 30s after backend %d was killed", pid)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return waitReady(rctx, s.DSN(""), nil)
}

// Close stops the server and removes what itest made for it. It is safe to
// call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.backend == nil {
		return nil
	}
	return s.backend.close()
}

// ErrNoServer is returned by Start when no mode could provide a server.
var ErrNoServer = errors.New("itest: no PostgreSQL server available")

// Start starts (or, in ModeEnv, connects to) a server and waits until it
// accepts connections. The caller must Close it.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	modes := []Mode{ModeEnv, ModeDocker, ModeLocal}
	forced := cfg.Mode
	if forced == "" {
		forced = Mode(os.Getenv(EnvMode))
	}
	if forced != "" {
		switch forced {
		case ModeEnv, ModeDocker, ModeLocal:
			modes = []Mode{forced}
		default:
			return nil, fmt.Errorf("itest: unknown mode %q (want env, docker or local)", forced)
		}
	}
	var tried []string
	for _, m := range modes {
		var (
			s   *Server
			err error
		)
		switch m {
		case ModeEnv:
			s, err = startEnv(ctx)
		case ModeDocker:
			s, err = startDocker(ctx, cfg, logf)
		case ModeLocal:
			s, err = startLocal(ctx, cfg, logf)
		}
		if err == nil {
			logf("itest: PostgreSQL from %s at %s", m, s.Addr())
			return s, nil
		}
		tried = append(tried, fmt.Sprintf("%s: %v", m, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%w; tried %s", ErrNoServer, strings.Join(tried, "; "))
}

// startEnv uses the server in PGADVISORY_TEST_DSN.
func startEnv(ctx context.Context) (*Server, error) {
	dsn := os.Getenv(EnvDSN)
	if dsn == "" {
		return nil, fmt.Errorf("%s is not set", EnvDSN)
	}
	s, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	s.mode = ModeEnv
	if err := ping(ctx, s.DSN("")); err != nil {
		return nil, fmt.Errorf("%s: %w", EnvDSN, err)
	}
	return s, nil
}

// parseDSN reads a URL-form DSN into a Server (the database part is ignored:
// itest makes its own databases).
func parseDSN(dsn string) (*Server, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("itest: %s must be a postgres:// URL", EnvDSN)
	}
	s := &Server{host: u.Hostname(), port: 5432, user: u.User.Username(), query: u.Query()}
	s.pass, _ = u.User.Password()
	if p := u.Port(); p != "" {
		if s.port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("itest: %s has a bad port %q", EnvDSN, p)
		}
	}
	if s.host == "" {
		s.host = "127.0.0.1"
	}
	if s.user == "" {
		s.user = "postgres"
	}
	return s, nil
}

// ping opens dsn with lib/pq and runs one query.
func ping(ctx context.Context, dsn string) error {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.PingContext(ctx)
}
