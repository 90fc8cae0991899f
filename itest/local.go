package itest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// EnvPGBin names the directory of the PostgreSQL binaries for ModeLocal.
const EnvPGBin = "PGBIN"

// defaultSettings are what a server that itest starts runs with unless
// Config.Settings says otherwise: durability is worthless for throwaway data,
// and the module's stress tests open many sessions.
var defaultSettings = map[string]string{
	"fsync":              "off",
	"synchronous_commit": "off",
	"full_page_writes":   "off",
	"max_connections":    "300",
}

// settingArgs renders defaultSettings overlaid with extra as sorted
// "-c name=value" arguments.
func settingArgs(extra map[string]string) []string {
	all := make(map[string]string, len(defaultSettings)+len(extra))
	for k, v := range defaultSettings {
		all[k] = v
	}
	for k, v := range extra {
		all[k] = v
	}
	names := make([]string, 0, len(all))
	for k := range all {
		names = append(names, k)
	}
	sort.Strings(names)
	args := make([]string, 0, 2*len(names))
	for _, k := range names {
		args = append(args, "-c", k+"="+all[k])
	}
	return args
}

// localServer is a cluster in a temporary directory run by a postgres child
// process of this test binary.
type localServer struct {
	bin  string // directory of postgres and initdb
	dir  string // temporary directory: data/, the socket, the log
	port int
	args []string // postgres arguments, the same on every start
	cred *syscall.Credential
	logf func(string, ...any)

	mu   sync.Mutex
	proc *exec.Cmd     // the running postmaster, nil when stopped
	done chan struct{} // closed when proc has exited

	// watchdog stops the server and removes dir when this process dies
	// without Close: it waits for EOF on a pipe whose only writer is wdPipe.
	watchdog *exec.Cmd
	wdPipe   *os.File
}

// findBinDir picks the directory of the PostgreSQL server binaries.
func findBinDir(ctx context.Context) (string, error) {
	var tried []string
	try := func(dir string) bool {
		if dir == "" {
			return false
		}
		for _, b := range []string{"postgres", "initdb"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				tried = append(tried, dir)
				return false
			}
		}
		return true
	}
	if d := os.Getenv(EnvPGBin); d != "" {
		if try(d) {
			return d, nil
		}
		return "", fmt.Errorf("%s=%s has no postgres and initdb", EnvPGBin, d)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	out, err := exec.CommandContext(cctx, "pg_config", "--bindir").Output()
	cancel()
	if err == nil && try(strings.TrimSpace(string(out))) {
		return strings.TrimSpace(string(out)), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if try(d) {
			return d, nil
		}
	}
	if len(tried) == 0 {
		return "", errors.New("no PostgreSQL binaries found (set PGBIN, or install them so that pg_config --bindir or /usr/lib/postgresql/*/bin finds them)")
	}
	return "", fmt.Errorf("no PostgreSQL binaries found in %s", strings.Join(tried, ", "))
}

// versionOf reads the major version out of /usr/lib/postgresql/N/bin.
func versionOf(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

// serverCredential returns who the server runs as: the postgres user when
// this process is root (PostgreSQL refuses to run as root), else nil (this
// process's own user).
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a postgres user to run the server as: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres user has a non-numeric uid %q or gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// tempBase is where the cluster's temporary directory goes: os.TempDir(),
// unless the server's user cannot reach it or the socket path in it would be
// longer than the kernel allows (about 100 bytes), then /tmp.
func tempBase(cred *syscall.Credential) string {
	base := os.TempDir()
	if len(base)+len("/pgadvisory-itest-0123456789/.s.PGSQL.65535") > 100 {
		return "/tmp"
	}
	if cred == nil {
		return base
	}
	for d := base; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return "/tmp"
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm()&0o001 == 0 && (!ok || st.Uid != cred.Uid) {
			return "/tmp" // not traversable by the server's user
		}
		if d == filepath.Dir(d) {
			return base
		}
	}
}

// freePort asks the kernel for a port that is free at the moment.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startLocal makes a throwaway cluster with the local PostgreSQL binaries.
func startLocal(ctx context.Context, cfg Config, logf func(string, ...any)) (*Server, error) {
	begin := time.Now()
	bin, err := findBinDir(ctx)
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tempBase(cred), "pgadvisory-itest-")
	if err != nil {
		return nil, fmt.Errorf("itest: temp dir: %w", err)
	}
	ls := &localServer{bin: bin, dir: dir, cred: cred, logf: logf}
	ok := false
	defer func() {
		if !ok {
			_ = ls.close()
		}
	}()
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("itest: chown %s: %w", dir, err)
		}
	}
	if err := ls.startWatchdog(); err != nil {
		return nil, err
	}
	if err := ls.initdb(ctx); err != nil {
		return nil, err
	}
	// The port is free when asked but not reserved; if another process takes
	// it before the server binds, try another.
	for attempt := 0; ; attempt++ {
		if ls.port, err = freePort(); err != nil {
			return nil, fmt.Errorf("itest: free port: %w", err)
		}
		ls.args = append([]string{
			"-D", filepath.Join(dir, "data"),
			"-p", strconv.Itoa(ls.port),
			"-k", dir,
			"-c", "listen_addresses=127.0.0.1",
		}, settingArgs(cfg.Settings)...)
		err = ls.start(ctx)
		if err == nil {
			break
		}
		if attempt == 2 || !strings.Contains(err.Error(), "could not bind") {
			return nil, err
		}
	}
	ok = true
	logf("itest: local cluster in %s (%s) on port %d in %v", dir, bin, ls.port, time.Since(begin).Round(time.Millisecond))
	return &Server{mode: ModeLocal, host: "127.0.0.1", port: ls.port, user: "postgres", backend: ls}, nil
}

// command builds a command for one of the PostgreSQL binaries, run as the
// server's user, in its own process group so that a terminal's Ctrl-C goes to
// the test binary only (the watchdog then cleans up).
func (ls *localServer) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(ls.bin, name), args...)
	cmd.Dir = ls.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "HOME="+ls.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: ls.cred}
	return cmd
}

// initdb creates the cluster: superuser postgres, trust authentication.
func (ls *localServer) initdb(ctx context.Context) error {
	cmd := ls.command(ctx, "initdb",
		"-D", filepath.Join(ls.dir, "data"),
		"-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("itest: initdb: %w: %s", err, tail(out))
	}
	return nil
}

// start runs the postmaster and waits until it accepts connections.
func (ls *localServer) start(ctx context.Context) error {
	logPath := filepath.Join(ls.dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("itest: %w", err)
	}
	defer logFile.Close() // the child has its own copy
	// The postmaster outlives ctx, which only bounds the wait for it.
	cmd := ls.command(context.Background(), "postgres", ls.args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("itest: start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	ls.mu.Lock()
	ls.proc, ls.done = cmd, done
	ls.mu.Unlock()

	dsn := (&Server{host: "127.0.0.1", port: ls.port, user: "postgres"}).DSN("")
	err = waitReady(ctx, dsn, done)
	if err == nil {
		return nil
	}
	_ = ls.stop()
	log, _ := os.ReadFile(logPath)
	return fmt.Errorf("itest: postgres did not come up: %w: %s", err, tail(log))
}

// errExited reports a server process that ended while itest waited for it.
var errExited = errors.New("server process exited")

// waitReady pings dsn until it answers, ctx ends, or exited is closed.
func waitReady(ctx context.Context, dsn string, exited <-chan struct{}) error {
	var last error
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = ping(pctx, dsn)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tail returns the last lines of a log for an error message.
func tail(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// stop shuts the postmaster down: fast shutdown, then immediate, then kill.
func (ls *localServer) stop() error {
	return ls.stopWith(syscall.SIGINT)
}

// stopWith shuts the postmaster down starting with first (SIGINT: fast
// shutdown; SIGQUIT: immediate), then escalates as stop does.
func (ls *localServer) stopWith(first syscall.Signal) error {
	ls.mu.Lock()
	cmd, done := ls.proc, ls.done
	ls.proc, ls.done = nil, nil
	ls.mu.Unlock()
	if cmd == nil {
		return nil
	}
	for _, step := range []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{syscall.SIGINT, 15 * time.Second}, {syscall.SIGQUIT, 5 * time.Second}, {syscall.SIGKILL, 10 * time.Second}} {
		if first == syscall.SIGQUIT && step.sig == syscall.SIGINT {
			continue
		}
		_ = cmd.Process.Signal(step.sig)
		select {
		case <-done:
			return nil
		case <-time.After(step.wait):
			ls.logf("itest: postgres pid %d ignored %v", cmd.Process.Pid, step.sig)
		}
	}
	return fmt.Errorf("itest: postgres pid %d does not exit", cmd.Process.Pid)
}

// restart stops and starts the server on the same port and data.
func (ls *localServer) restart(ctx context.Context) error {
	if err := ls.stop(); err != nil {
		return err
	}
	return ls.start(ctx)
}

// crash stops the postmaster in immediate mode and starts it again.
func (ls *localServer) crash(ctx context.Context) error {
	if err := ls.stopWith(syscall.SIGQUIT); err != nil {
		return err
	}
	return ls.start(ctx)
}

// kill sends SIGKILL to pid, which must be a child of the running
// postmaster (a backend), never any other process.
func (ls *localServer) kill(_ context.Context, pid int) error {
	pm := ls.pid()
	if pm == 0 {
		return errors.New("itest: the server is not running")
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return fmt.Errorf("itest: backend %d: %w", pid, err)
	}
	// The fields after the command name (in parentheses, which may hold
	// spaces): state, ppid, ...
	rest := string(stat)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 2 || f[1] != strconv.Itoa(pm) {
		return fmt.Errorf("itest: process %d is not a backend of postmaster %d", pid, pm)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("itest: kill backend %d: %w", pid, err)
	}
	return nil
}

// close stops the server, removes the temporary directory and ends the
// watchdog.
func (ls *localServer) close() error {
	err := ls.stop()
	if rmErr := os.RemoveAll(ls.dir); rmErr != nil && err == nil {
		err = fmt.Errorf("itest: %w", rmErr)
	}
	if ls.wdPipe != nil {
		ls.wdPipe.Close() // EOF: the watchdog finds nothing left to do and exits
		_ = ls.watchdog.Wait()
		ls.wdPipe = nil
	}
	return err
}

// pid returns the postmaster's pid, or 0 when it is not running.
func (ls *localServer) pid() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.proc == nil {
		return 0
	}
	return ls.proc.Process.Pid
}

// watchdogScript waits for EOF on stdin, which comes when the test binary
// closes the pipe or dies (even by SIGKILL: the kernel closes its end), and
// then stops whatever postmaster runs on the data directory and removes the
// temporary directory. $1 is that directory.
const watchdogScript = `while read -r _; do :; done
pid=
read -r pid < "$1/data/postmaster.pid" 2>/dev/null
if [ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null; then
	i=0
	while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
	kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$1"
`

// startWatchdog starts the shell that cleans up if this process dies
// without calling Close.
func (ls *localServer) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("itest: watchdog pipe: %w", err)
	}
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, "itest-watchdog", ls.dir)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return fmt.Errorf("itest: start watchdog: %w", err)
	}
	ls.watchdog, ls.wdPipe = cmd, w
	return nil
}
