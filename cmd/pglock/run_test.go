package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// testDB is a fresh database for one test: a handle on it, and the
// environment that points pglock at it.
type testDB struct {
	db  *sql.DB
	dsn string
	env []string
}

func newTestDB(t *testing.T) testDB {
	t.Helper()
	dsn := itest.DSN(t)
	db := itest.OpenDSN(t, "pgx", dsn)
	t.Cleanup(func() {
		testkit.WaitNoAdvisoryLocks(t, db)
		testkit.WaitConnsIdle(t, db)
	})
	return testDB{db: db, dsn: dsn, env: []string{"DATABASE_URL=" + dsn}}
}

// lockName is a lock name no other test uses.
func lockName(t *testing.T) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "pglock-test:" + t.Name() + ":" + hex.EncodeToString(b[:])
}

// holders returns the pids holding key (granted) in the test database.
func (d testDB) holders(t *testing.T, key keyspace.Key) []int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	locks, err := testkit.AdvisoryLocks(ctx, d.db)
	if err != nil {
		t.Fatalf("reading pg_locks: %v", err)
	}
	c, o, s := key.Lock()
	var pids []int
	for _, l := range locks {
		if l.ClassID == c && l.ObjID == o && l.ObjSubID == s && l.Granted {
			pids = append(pids, l.PID)
		}
	}
	return pids
}

// waitHeld waits until exactly one backend holds key and returns its pid.
func (d testDB) waitHeld(t *testing.T, key keyspace.Key) int {
	t.Helper()
	var pid int
	waitFor(t, 20*time.Second, "the lock to show in pg_locks", func() bool {
		p := d.holders(t, key)
		if len(p) == 1 {
			pid = p[0]
		}
		return len(p) == 1
	})
	return pid
}

// hold takes key from the test itself through advisory, released on cleanup.
func (d testDB) hold(t *testing.T, key keyspace.Key, shared bool) *advisory.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := advisory.New(d.db)
	lock := l.Lock
	if shared {
		lock = l.LockShared
	}
	lease, err := lock(ctx, key)
	if err != nil {
		t.Fatalf("holding %v: %v", key, err)
	}
	t.Cleanup(func() { _ = lease.Release(context.Background()) })
	return lease
}

func (d testDB) args(args ...string) []string {
	return append([]string{"run"}, args...)
}

// TestRunExactlyOne starts two "pglock run --try" of the same name at once:
// exactly one runs its command, the other exits 75 without running it.
func TestRunExactlyOne(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	name := lockName(t)
	dir := t.TempDir()
	marker, release := filepath.Join(dir, "ran"), filepath.Join(dir, "release")
	// CMD notes that it ran, then holds on until the test lets it go.
	script := `echo "$$" >> "$1"; while [ ! -e "$2" ]; do sleep 0.02; done`
	var procs []*proc
	for i := 0; i < 2; i++ {
		procs = append(procs, start(t, d.env, d.args("--try", name, "--", "sh", "-c", script, "sh", marker, release)...))
	}
	// One of them finds the lock taken and ends; the other waits for release.
	var winner *proc
	waitFor(t, 30*time.Second, "one pglock to give up", func() bool {
		for i, p := range procs {
			select {
			case r := <-p.done:
				if r.code != exitNotAcquired || !strings.Contains(r.stderr, "held elsewhere") {
					t.Fatalf("the pglock that did not get the lock: %v", r)
				}
				winner = procs[1-i]
				return true
			default:
			}
		}
		return false
	})
	waitFor(t, 10*time.Second, "the winner's command to start", func() bool {
		b, _ := os.ReadFile(marker)
		return len(b) > 0
	})
	d.waitHeld(t, keyspace.Hash(name))
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := winner.wait(t, 30*time.Second); r.code != 0 {
		t.Fatalf("the pglock that got the lock: %v", r)
	}
	b, _ := os.ReadFile(marker)
	if lines := strings.Fields(string(b)); len(lines) != 1 {
		t.Fatalf("the command ran %d times, want once", len(lines))
	}
}

// TestRunExitStatus checks the documented statuses: CMD's own, a signal's,
// not found, not acquired (--try and --wait), shared alongside shared.
func TestRunExitStatus(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	name := lockName(t)
	n := func(i int) string { return name + ":" + strconv.Itoa(i) }
	cases := []struct {
		args []string
		code int
	}{
		{[]string{n(0), "--", "sh", "-c", "exit 0"}, 0},
		{[]string{n(1), "--", "sh", "-c", "exit 7"}, 7},
		{[]string{"--try", n(2), "--", "sh", "-c", "exit 200"}, 200},
		{[]string{n(3), "--", "sh", "-c", `kill -TERM $$`}, 128 + int(syscall.SIGTERM)},
		{[]string{n(4), "--", "/nonexistent/command"}, exitNotFound},
		{[]string{n(5), "--", "sh", "-c", `test "$PGLOCK_KEY" = "` + keyspace.Hash(n(5)).String() + `"`}, 0},
		{[]string{"--key", "(5,6)", "--", "sh", "-c", `test "$PGLOCK_KEY" = "(5,6)"`}, 0},
	}
	// Independent keys: run them all at once.
	procs := make([]*proc, len(cases))
	for i, tc := range cases {
		procs[i] = start(t, d.env, d.args(tc.args...)...)
	}
	for i, tc := range cases {
		if r := procs[i].wait(t, time.Minute); r.code != tc.code {
			t.Errorf("pglock run %q: want exit %d, got %v", tc.args, tc.code, r)
		}
	}

	// Held elsewhere (by the test, exclusively): --try and --wait give 75.
	lease := d.hold(t, keyspace.Hash(name), false)
	if r := pglock(t, d.env, d.args("--try", name, "--", "sh", "-c", "echo ran")...); r.code != exitNotAcquired || r.stdout != "" {
		t.Errorf("--try on a held lock: %v", r)
	}
	r := pglock(t, d.env, d.args("--wait", "300ms", name, "--", "sh", "-c", "echo ran")...)
	if r.code != exitNotAcquired || r.stdout != "" || !strings.Contains(r.stderr, "not acquired within 300ms") {
		t.Errorf("--wait 300ms on a held lock: %v", r)
	}
	if r.took < 300*time.Millisecond {
		t.Errorf("--wait 300ms gave up after %v", r.took)
	}
	if r := pglock(t, d.env, d.args("--shared", "--try", name, "--", "true")...); r.code != exitNotAcquired {
		t.Errorf("--shared --try on an exclusively held lock: %v", r)
	}
	if err := lease.Release(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Held shared: another shared holder runs, an exclusive one does not.
	shared := d.hold(t, keyspace.Hash(name), true)
	if r := pglock(t, d.env, d.args("--shared", "--try", name, "--", "true")...); r.code != 0 {
		t.Errorf("--shared --try alongside a shared holder: %v", r)
	}
	if r := pglock(t, d.env, d.args("--try", name, "--", "true")...); r.code != exitNotAcquired {
		t.Errorf("--try on a shared-held lock: %v", r)
	}
	// A waiting pglock gets the lock once it is free.
	p := start(t, d.env, d.args(name, "--", "true")...)
	waitFor(t, 20*time.Second, "pglock to wait for the lock", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		locks, _ := testkit.AdvisoryLocks(ctx, d.db)
		for _, l := range locks {
			if !l.Granted {
				return true
			}
		}
		return false
	})
	select {
	case r := <-p.done:
		t.Fatalf("pglock did not wait: %v", r)
	default:
	}
	if err := shared.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := p.wait(t, 30*time.Second); r.code != 0 {
		t.Errorf("pglock waiting for the lock: %v", r)
	}
}

// TestRunLost terminates the backend that holds pglock's lock: CMD gets
// SIGTERM (and SIGKILL after --grace if it ignores it) within the keepalive
// plus a second plus the grace, and pglock exits 76.
func TestRunLost(t *testing.T) {
	t.Parallel()
	const keepalive, grace = 200 * time.Millisecond, time.Second
	cases := []struct {
		name   string
		script string
		killed bool // needs SIGKILL
	}{
		{"sleep", `exec sleep 60`, false},
		{"ignores-TERM", `trap "" TERM; sleep 60; sleep 60`, true},
		{"traps-TERM", `trap "echo cleaning up; exit 3" TERM; while :; do sleep 0.02; done`, false},
	}
	d := newTestDB(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := lockName(t)
			p := start(t, d.env, d.args("--keepalive", keepalive.String(), "--grace", grace.String(),
				name, "--", "sh", "-c", tc.script)...)
			pid := d.waitHeld(t, keyspace.Hash(name))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var ok bool
			// pid holds the lock in this test's own database.
			if err := d.db.QueryRowContext(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
				t.Fatalf("pg_terminate_backend(%d): %v %v", pid, ok, err)
			}
			killed := time.Now()
			limit := keepalive + time.Second + 5*time.Second // detection, plus slack for a loaded machine
			if tc.killed {
				limit += grace
			}
			r := p.wait(t, time.Minute)
			took := time.Since(killed)
			t.Logf("CMD ended %v after the backend was terminated (limit %v)", took.Round(time.Millisecond), limit)
			if r.code != exitLost || !strings.Contains(r.stderr, "lost") {
				t.Fatalf("want exit %d: %v", exitLost, r)
			}
			if took > limit {
				t.Errorf("CMD ended %v after the loss, limit %v", took, limit)
			}
			if tc.killed != strings.Contains(r.stderr, "SIGKILL now") {
				t.Errorf("SIGKILL sent: %v, want %v\n%v", !tc.killed, tc.killed, r)
			}
			if tc.killed && took < grace {
				t.Errorf("CMD that ignores SIGTERM ended after %v, before the grace of %v", took, grace)
			}
			if tc.name == "traps-TERM" && !strings.Contains(r.stdout, "cleaning up") {
				t.Errorf("CMD's TERM trap did not run: %v", r)
			}
		})
	}
}

// TestRunSignals sends SIGTERM and SIGINT to pglock while CMD runs: CMD gets
// them, and pglock exits with CMD's status.
func TestRunSignals(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	sigs := []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP}
	procs := make([]*proc, len(sigs))
	for i := range sigs {
		script := `trap "echo got signal; exit 42" TERM INT HUP; echo ready; while :; do sleep 0.02; done`
		procs[i] = start(t, d.env, d.args(lockName(t), "--", "sh", "-c", script)...)
	}
	for i, sig := range sigs {
		p := procs[i]
		waitFor(t, 30*time.Second, "CMD to start", func() bool { return strings.Contains(p.stdout.String(), "ready") })
		if err := p.cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
	}
	for i, sig := range sigs {
		if r := procs[i].wait(t, 30*time.Second); r.code != 42 || !strings.Contains(r.stdout, "got signal") {
			t.Errorf("%v to pglock: want CMD's exit 42: %v", sig, r)
		}
	}
	// A signal while waiting for the lock: nothing runs, 128+N.
	name := lockName(t)
	d.hold(t, keyspace.Hash(name), false)
	p := start(t, d.env, d.args(name, "--", "sh", "-c", "echo ran")...)
	waitFor(t, 20*time.Second, "pglock to wait for the lock", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		locks, _ := testkit.AdvisoryLocks(ctx, d.db)
		for _, l := range locks {
			if !l.Granted {
				return true
			}
		}
		return false
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if r := p.wait(t, 20*time.Second); r.code != 128+int(syscall.SIGTERM) || r.stdout != "" {
		t.Errorf("SIGTERM while waiting: %v", r)
	}
}

// randInt32 is a positive int32 no other test picks, for keys by number.
func randInt32() int32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return int32(binary.BigEndian.Uint32(b[:]) >> 2)
}

// TestRunNumberKey: a decimal integer names the key itself, so "pglock run
// N" contends with keyspace.Int64(N) held by a program, and "--ns A B" with
// Namespace.ID; "--name N" hashes the text instead and does not contend.
// pglock says on stderr which key it holds, and its application_name keeps
// the namespace.
func TestRunNumberKey(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	n, ns, id := int64(randInt32())<<20+7, randInt32(), randInt32()
	num, pair := keyspace.Int64(n), keyspace.Pair(ns, id)
	numText, nsText, idText := strconv.FormatInt(n, 10), strconv.Itoa(int(ns)), strconv.Itoa(int(id))
	d.hold(t, num, false)
	d.hold(t, pair, false)
	held := []struct {
		args []string
		key  keyspace.Key
	}{
		{[]string{numText}, num},
		{[]string{"--ns", nsText, idText}, pair},
	}
	for _, h := range held {
		r := pglock(t, d.env, d.args(append(append([]string{"--try"}, h.args...), "--", "sh", "-c", "echo ran")...)...)
		want := "(key " + h.key.String() + "; pg_locks " + pgLocks(h.key) + ") is held elsewhere"
		if r.code != exitNotAcquired || r.stdout != "" || !strings.Contains(r.stderr, want) {
			t.Errorf("pglock run --try %q while a program holds %v: want exit %d and %q: %v", h.args, h.key, exitNotAcquired, want, r)
		}
	}
	// The hashed texts are other keys: free, held while CMD runs, and named.
	free := []struct {
		args  []string
		key   keyspace.Key
		label string
	}{
		{[]string{"--name", numText}, keyspace.Hash(numText), "--name " + numText},
		{[]string{"--ns", nsText, "--name", idText}, keyspace.Pair(ns, keyspace.Hash32(idText)), "--ns " + nsText + " --name " + idText},
	}
	for _, f := range free {
		r := pglock(t, d.env, d.args(append(append([]string{"--try"}, f.args...), "--", "sh", "-c", `test "$PGLOCK_KEY" = "$1" && echo ran`, "sh", f.key.String())...)...)
		want := "pglock: holding lock " + f.label + ": key " + f.key.String() + " (pg_locks " + pgLocks(f.key) + ")"
		if r.code != 0 || r.stdout != "ran\n" || !strings.Contains(r.stderr, want) {
			t.Errorf("pglock run --try %q: want it to run with key %v and say %q: %v", f.args, f.key, want, r)
		}
		if r := pglock(t, d.env, d.args(append(append([]string{"--try", "--quiet"}, f.args...), "--", "true")...)...); r.code != 0 || r.stderr != "" {
			t.Errorf("pglock run --quiet %q: want no output: %v", f.args, r)
		}
	}

	// application_name names the key as given, namespace included.
	release := filepath.Join(t.TempDir(), "release")
	other := keyspace.Pair(ns, id+1)
	p := start(t, d.env, d.args("--ns", nsText, strconv.Itoa(int(id+1)), "--", "sh", "-c", `while [ ! -e "$1" ]; do sleep 0.02; done`, "sh", release)...)
	pid := d.waitHeld(t, other)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var app string
	if err := d.db.QueryRowContext(ctx, "SELECT application_name FROM pg_stat_activity WHERE pid = $1", pid).Scan(&app); err != nil {
		t.Fatal(err)
	}
	if want := "pglock run --ns " + nsText + " " + strconv.Itoa(int(id+1)); app != want {
		t.Errorf("application_name %q, want %q", app, want)
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := p.wait(t, 30*time.Second); r.code != 0 {
		t.Errorf("pglock run --ns: %v", r)
	}
}

// TestRunFence: "pglock run --fence" hands CMD a fencing token in
// PGLOCK_TOKEN, above the one of the run before and of a program's
// advisory lease on the same key between them; without the table it names
// the fix and runs nothing; a bad table name is a usage error.
func TestRunFence(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	name := lockName(t)
	script := `echo "$PGLOCK_TOKEN"`
	r := start(t, d.env, "run", "--fence", name, "--", "sh", "-c", script).wait(t, 30*time.Second)
	if r.code != exitUnavailable || !strings.Contains(r.stderr, "pglock fence init") || r.stdout != "" {
		t.Fatalf("run --fence without the table: %v", r)
	}
	if r := start(t, d.env, "run", "--fence-table", "x", name, "--", "true").wait(t, 30*time.Second); r.code != exitUsage {
		t.Fatalf("--fence-table without --fence: %v", r)
	}
	if r := start(t, d.env, "run", "--fence", "--fence-table", "x;y", name, "--", "true").wait(t, 30*time.Second); r.code != exitUsage {
		t.Fatalf("a bad --fence-table: %v", r)
	}
	if r := start(t, d.env, "fence", "init").wait(t, 30*time.Second); r.code != 0 {
		t.Fatalf("fence init: %v", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last int64
	for i := range 3 {
		if i == 1 {
			lease, err := advisory.New(d.db, advisory.WithFencing("")).Lock(ctx, keyspace.Hash(name))
			if err != nil {
				t.Fatal(err)
			}
			if lease.Token() <= last {
				t.Fatalf("the program's token %d after pglock's %d", lease.Token(), last)
			}
			last = lease.Token()
			lease.Release(ctx)
		}
		r := start(t, d.env, "run", "--fence", name, "--", "sh", "-c", script).wait(t, 30*time.Second)
		tok, err := strconv.ParseInt(strings.TrimSpace(r.stdout), 10, 64)
		if r.code != 0 || err != nil || tok <= last || !strings.Contains(r.stderr, "fencing token "+strconv.FormatInt(tok, 10)) {
			t.Fatalf("run %d: token %q (%v) after %d: %v", i, r.stdout, err, last, r)
		}
		last = tok
	}
}
