package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// TestLsJSON holds a lock and has another session wait for it: "pglock ls
// --json" lists both with the decoded key, namespace, pid and wait.
func TestLsJSON(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	key := keyspace.Pair(7, 99)
	lease := d.hold(t, key, false)
	// The bigint key is held (shared) by a pglock run, whose backend pid
	// the test reads from pg_locks itself.
	bigName := lockName(t)
	big := keyspace.Hash(bigName)
	release := filepath.Join(t.TempDir(), "release")
	runner := start(t, d.env, "run", "--shared", bigName, "--",
		"sh", "-c", `while [ ! -e "$1" ]; do sleep 0.02; done`, "sh", release)
	bigPID := d.waitHeld(t, big)
	defer func() {
		if err := os.WriteFile(release, nil, 0o644); err != nil {
			t.Error(err)
		}
		if r := runner.wait(t, 30*time.Second); r.code != 0 {
			t.Errorf("pglock run: %v", r)
		}
	}()

	// A waiter: another session blocks on key until the test lets go.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l, err := advisory.New(d.db).Lock(ctx, key)
		if err == nil {
			_ = l.Release(context.Background())
		} else if !errors.Is(err, context.Canceled) {
			t.Errorf("waiter: %v", err)
		}
	}()
	defer wg.Wait()
	defer cancel()

	var (
		out  lsOutput
		raw  string
		rows []lsRow
	)
	waitFor(t, 20*time.Second, "ls to show the holder and the waiter", func() bool {
		r := pglock(t, d.env, "ls", "--json", "--names", "jobs=7")
		if r.code != 0 {
			t.Fatalf("pglock ls --json: %v", r)
		}
		out, raw = lsOutput{}, r.stdout
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("pglock ls --json: %v\n%v", err, r)
		}
		rows = out.Locks
		return len(rows) == 3
	})
	// Durations are whole milliseconds: no float noise.
	if m := regexp.MustCompile(`"\w+_ms": -?\d*[.eE]`).FindString(raw); m != "" {
		t.Errorf("pglock ls --json: %s is not a whole number:\n%s", m, raw)
	}
	// Sorted: bigint keys first, then the pair; holder before waiter.
	b, h, w := rows[0], rows[1], rows[2]
	if b.Key != big.String() || b.Form != "bigint" || b.Int64 == nil || *b.Int64 != mustInt64(big) || b.Mode != "shared" ||
		!b.Granted || b.PID != bigPID || b.ApplicationName != "pglock run "+bigName || b.ClientAddr == "" {
		t.Errorf("bigint row: %+v, want key %v shared held by %d, application \"pglock run %s\"", b, big, bigPID, bigName)
	}
	if h.Key != "(7,99)" || h.Name != "jobs/99" || h.Namespace != "jobs" || h.Form != "pair" ||
		h.ClassID != 7 || h.ObjID != 99 || h.ObjSubID != 2 || h.Mode != "exclusive" || !h.Granted || h.PID != lease.PID() {
		t.Errorf("holder row: %+v, want (7,99) jobs/99 exclusive held by %d", h, lease.PID())
	}
	// The holder is an idle session: its session age is known, it waits
	// for nothing and is in no transaction.
	if h.BackendStart == nil || h.SessionAgeMS == nil || *h.SessionAgeMS < 0 || h.WaitedMS != nil || h.XactAgeMS != nil || len(h.BlockedBy) != 0 {
		t.Errorf("holder row: %+v, want a session age only", h)
	}
	// The waiter runs a statement (a transaction) and names its blocker.
	if w.Key != "(7,99)" || w.Granted || w.PID == lease.PID() || w.WaitStart == nil || w.WaitedMS == nil || *w.WaitedMS < 0 ||
		w.XactAgeMS == nil || w.SessionAgeMS == nil || fmt.Sprint(w.BlockedBy) != fmt.Sprint([]int{lease.PID()}) {
		t.Errorf("waiter row: %+v, want waited, in a transaction, blocked by %d", w, lease.PID())
	}
	if len(out.Blocking) != 1 || out.Blocking[0].PID != lease.PID() || len(out.Blocking[0].Blocks) != 1 || out.Blocking[0].Blocks[0].PID != w.PID {
		t.Errorf("blocking: %+v, want %d above %d", out.Blocking, lease.PID(), w.PID)
	}

	// The table form names the same, with each duration in its column.
	r := pglock(t, d.env, "ls", "--names", "jobs=7")
	if r.code != 0 || !regexp.MustCompile(`(?m)^KEY\s+MODE\s+LOCK\s+WAITED\s+IN XACT\s+SESSION AGE\s+PID`).MatchString(r.stdout) ||
		!regexp.MustCompile(`jobs/99\s+exclusive\s+held\s+-\s+-\s+\d\S*\s+`+strconv.Itoa(lease.PID())).MatchString(r.stdout) ||
		!regexp.MustCompile(`jobs/99\s+exclusive\s+waiting\s+\d\S*\s+\d\S*\s+\d\S*\s+`+strconv.Itoa(w.PID)).MatchString(r.stdout) ||
		!strings.Contains(r.stdout, "PostgreSQL does not record when a lock was granted") {
		t.Errorf("pglock ls:\n%v", r)
	}
	cancel()
	wg.Wait()
}

func mustInt64(k keyspace.Key) int64 {
	n, _ := k.Int64()
	return n
}

// TestLsEmpty: nothing held, nothing listed.
func TestLsEmpty(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	if r := pglock(t, d.env, "ls", "--json"); r.code != 0 || strings.Join(strings.Fields(r.stdout), " ") != `{ "locks": [], "blocking": [] }` {
		t.Errorf("pglock ls --json: %v", r)
	}
	if r := pglock(t, d.env, "ls"); r.code != 0 || !strings.Contains(r.stdout, "no advisory locks") {
		t.Errorf("pglock ls: %v", r)
	}
}

// TestConnErrors: a bad connection string, settings the server refuses, a
// refused port and a server that never answers each give a clear error
// naming where, and the documented exit status: 78 for settings that cannot
// work (both commands), else 1 for ls and 69 (try again later) for run.
func TestConnErrors(t *testing.T) {
	t.Parallel()
	// A port where nothing listens.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	// A port that accepts and then says nothing.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		silent.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	}()
	// The test server, asked for a database and a role that do not exist.
	d := newTestDB(t)
	u, err := url.Parse(d.dsn)
	if err != nil {
		t.Fatal(err)
	}
	noDB, noRole := *u, *u
	noDB.Path = "/pglock_no_such_database"
	noRole.User = url.User("pglock_no_such_role")

	const config = -1 // exitConfig for both commands
	cases := []struct {
		name string
		env  []string
		code int // for run; ls exits 1 where run exits 69
		want []string
	}{
		{"bad-url", []string{"DATABASE_URL=postgres://u@host:notaport/db"}, config, []string{"bad connection settings from DATABASE_URL"}},
		{"bad-keywords", []string{"DATABASE_URL=host=x port"}, config, []string{"bad connection settings from DATABASE_URL", "keyword/value"}},
		{"bad-scheme", []string{"DATABASE_URL=mysql://u@h/db"}, config, []string{"postgres://"}},
		{"bad-pgport", []string{"PGHOST=127.0.0.1", "PGPORT=x"}, config, []string{"PGPORT"}},
		{"no-service", []string{"PGSERVICE=pglock_no_such_service", "PGSERVICEFILE=/nonexistent/pg_service.conf"}, config, []string{"PGSERVICE", "service file"}},
		{"no-database", []string{"DATABASE_URL=" + noDB.String()}, config, []string{"refused the connection settings", "pglock_no_such_database", "3D000"}},
		{"no-role", []string{"DATABASE_URL=" + noRole.String()}, config, []string{"refused the connection settings", "pglock_no_such_role", "28000"}},
		{"refused", []string{"DATABASE_URL=postgres://u@" + refused + "/db?sslmode=disable"}, exitUnavailable,
			[]string{"cannot connect to PostgreSQL at " + refused, `user "u"`, `database "db"`}},
		{"refused-pg-env", []string{"PGHOST=127.0.0.1", "PGPORT=" + refused[strings.LastIndex(refused, ":")+1:], "PGUSER=u", "PGSSLMODE=disable"},
			exitUnavailable, []string{"cannot connect to PostgreSQL at " + refused, "settings from the environment (PGHOST, PGPORT, PGUSER, PGSSLMODE)"}},
		{"silent", []string{"DATABASE_URL=postgres://u@" + silent.Addr().String() + "/db?sslmode=disable&connect_timeout=1"},
			exitUnavailable, []string{"cannot connect to PostgreSQL at " + silent.Addr().String(), "no answer within 1s"}},
	}
	// Every case and command at once: most of the time is waiting.
	type run struct {
		tc   int
		args []string
		p    *proc
	}
	var runs []run
	for i, tc := range cases {
		for _, args := range [][]string{{"ls"}, {"run", "x", "--", "sh", "-c", "echo ran"}} {
			runs = append(runs, run{i, args, start(t, tc.env, args...)})
		}
	}
	for _, rn := range runs {
		tc, args := cases[rn.tc], rn.args
		r := rn.p.wait(t, time.Minute)
		want := tc.code
		switch {
		case want == config:
			want = exitConfig
		case args[0] == "ls":
			want = exitError
		}
		if r.code != want || r.stdout != "" {
			t.Errorf("%s: pglock %s: want exit %d and no output: %v", tc.name, args[0], want, r)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%s: pglock %s: stderr lacks %q:\n%s", tc.name, args[0], w, r.stderr)
			}
		}
		if tc.name == "silent" && r.took > 15*time.Second {
			t.Errorf("pglock %s took %v with connect_timeout=1", args[0], r.took)
		}
	}
}
