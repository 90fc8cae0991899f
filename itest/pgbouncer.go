package itest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PgBouncer pool modes, for StartPgBouncer.
const (
	PoolSession     = "session"
	PoolTransaction = "transaction"
	PoolStatement   = "statement"
)

// Pool sizes per database and user. Transaction and statement pooling get a
// tiny pool so that clients really share server connections (and a session
// lock taken through it really lands on a shared backend); session pooling
// gets room for a few concurrent clients.
const (
	pgbouncerSharedPool  = 2
	pgbouncerSessionPool = 8
)

// StartPgBouncer starts Debian's pgbouncer in front of srv with the given pool
// mode (PoolSession, PoolTransaction or PoolStatement) on a free port of
// 127.0.0.1, and stops it and removes its files on cleanup. It returns a
// function that gives the DSN of a database on srv through the pooler:
//
//	dsn := itest.StartPgBouncer(t, itest.Shared(t), itest.PoolTransaction)
//	name := ... // a database on the server, e.g. from itest.DSN(t)
//	db := itest.OpenDSN(t, "pgx", dsn(name))
//
// Every database of srv is reachable (a wildcard entry), authentication is
// trust, the pool holds 2 server connections per database in transaction and
// statement mode (8 in session mode), server_round_robin is on so that
// consecutive transactions of one client land on different backends, and a
// client that waits more than 10 s for a server connection gets an error.
//
// The DSN asks pgx for the simple protocol (default_query_exec_mode), as
// pgx needs behind a transaction pooler of this version (1.18 keeps no
// prepared statements across transactions); the pooler is told to ignore that
// parameter, so the same DSN works with lib/pq.
//
// pgbouncer refuses to run as root: when the test runs as root it runs as
// the postgres user. If pgbouncer is not installed the test is skipped,
// except under CI=true, where it fails.
func StartPgBouncer(tb testing.TB, srv *Server, poolMode string) func(database string) string {
	tb.Helper()
	switch poolMode {
	case PoolSession, PoolTransaction, PoolStatement:
	default:
		tb.Fatalf("itest: pgbouncer pool mode %q: want session, transaction or statement", poolMode)
	}
	bin, err := findPgBouncer()
	if err != nil {
		if inCI() {
			tb.Fatalf("itest: CI=true and %v", err)
		}
		tb.Skipf("itest: skipping: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var (
		pb   *pgbouncer
		last error
	)
	// The free port may be taken between asking and listening: try again.
	for attempt := 0; attempt < 3; attempt++ {
		if pb, last = startPgBouncer(ctx, bin, srv, poolMode); last == nil {
			break
		}
	}
	if last != nil {
		tb.Fatalf("itest: %v", last)
	}
	tb.Cleanup(func() {
		if err := pb.close(); err != nil {
			tb.Errorf("itest: %v", err)
		}
	})
	tb.Logf("itest: pgbouncer (%s pooling) at 127.0.0.1:%d", poolMode, pb.port)
	return pb.dsn
}

// findPgBouncer looks for the binary in PATH and where Debian puts it.
func findPgBouncer() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", errors.New("pgbouncer is not installed (apt-get install pgbouncer)")
}

// pgbouncer is one running pooler.
type pgbouncer struct {
	srv  *Server
	dir  string
	port int
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	log  string        // path of its log file
}

// pgbouncerIni is the configuration; the %s and %d verbs are filled with
// values that this file computes (paths, ports, a quoted server user), never
// with test input.
const pgbouncerIni = `[databases]
* = host=%s port=%d user=%s%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
admin_users = %s
pool_mode = %s
default_pool_size = %d
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
server_round_robin = 1
query_wait_timeout = 10
server_login_retry = 1
ignore_startup_parameters = extra_float_digits,default_query_exec_mode,statement_cache_capacity,description_cache_capacity
logfile = %s
pidfile = %s
log_connections = 0
log_disconnections = 0
`

// startPgBouncer writes the configuration into a fresh directory and starts
// the pooler in the foreground, waiting until it answers.
func startPgBouncer(ctx context.Context, bin string, srv *Server, poolMode string) (*pgbouncer, error) {
	cred, err := serverCredential()
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: free port: %w", err)
	}
	dir, err := os.MkdirTemp("", "itest-pgbouncer-")
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: %w", err)
	}
	pb := &pgbouncer{srv: srv, dir: dir, port: port, log: filepath.Join(dir, "pgbouncer.log")}
	fail := func(err error) (*pgbouncer, error) {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pgbouncer: %w", err)
	}
	pool := pgbouncerSharedPool
	if poolMode == PoolSession {
		pool = pgbouncerSessionPool
	}
	pass := ""
	if srv.pass != "" {
		pass = " password=" + quoteConnValue(srv.pass)
	}
	users := fmt.Sprintf("%s %s\n", quoteUserlist(srv.user), quoteUserlist(srv.pass))
	ini := fmt.Sprintf(pgbouncerIni, srv.host, srv.port, quoteConnValue(srv.user), pass,
		port, filepath.Join(dir, "userlist.txt"), srv.user, poolMode, pool,
		pb.log, filepath.Join(dir, "pgbouncer.pid"))
	for name, text := range map[string]string{"pgbouncer.ini": ini, "userlist.txt": users} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			return fail(err)
		}
	}
	if cred != nil {
		for _, p := range []string{dir, filepath.Join(dir, "pgbouncer.ini"), filepath.Join(dir, "userlist.txt")} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return fail(err)
			}
		}
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group, the postgres user when we are root, and a
	// SIGTERM if this test binary dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	pb.cmd = cmd
	pb.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(pb.done) }()
	if err := waitReady(ctx, pb.dsn("postgres"), pb.done); err != nil {
		_ = pb.stop()
		log, _ := os.ReadFile(pb.log)
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pgbouncer did not start: %w\n%s\n%s", err, tail(out.Bytes()), tail(log))
	}
	return pb, nil
}

// dsn is the DSN of database on the server through the pooler.
func (pb *pgbouncer) dsn(database string) string {
	if database == "" {
		database = "postgres"
	}
	u := url.URL{Scheme: "postgres", Host: "127.0.0.1:" + strconv.Itoa(pb.port), Path: "/" + database}
	if pb.srv.pass != "" {
		u.User = url.UserPassword(pb.srv.user, pb.srv.pass)
	} else {
		u.User = url.User(pb.srv.user)
	}
	q := url.Values{}
	q.Set("sslmode", "disable")
	q.Set("default_query_exec_mode", "simple_protocol")
	u.RawQuery = q.Encode()
	return u.String()
}

// stop ends the process: SIGTERM (immediate shutdown), then SIGKILL.
func (pb *pgbouncer) stop() error {
	if pb.cmd == nil || pb.cmd.Process == nil {
		return nil
	}
	_ = pb.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-pb.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = pb.cmd.Process.Kill()
	select {
	case <-pb.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("pgbouncer pid %d did not exit", pb.cmd.Process.Pid)
	}
}

// close stops the pooler and removes its directory.
func (pb *pgbouncer) close() error {
	err := pb.stop()
	if rerr := os.RemoveAll(pb.dir); err == nil && rerr != nil {
		err = fmt.Errorf("pgbouncer: remove %s: %w", pb.dir, rerr)
	}
	return err
}

// quoteConnValue quotes a libpq connection-string value.
func quoteConnValue(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// quoteUserlist quotes a field of pgbouncer's auth_file.
func quoteUserlist(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
