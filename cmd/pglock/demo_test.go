package main

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/testkit"
)

// demoTables lists the demo's tables in the test database.
func (d testDB) demoTables(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := d.db.QueryContext(ctx, `SELECT tablename FROM pg_tables WHERE tablename LIKE 'pglock\_demo\_%' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDemo runs "pglock demo" against a test database: updates are lost
// without a lock and none under txlock or advisory; its keys are in its own
// namespace, and its table and locks are gone at the end.
func TestDemo(t *testing.T) {
	t.Parallel()
	row := regexp.MustCompile(`(?m)^\s*(no lock|txlock|advisory)\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+\s*$`)
	d := newTestDB(t)
	r := pglock(t, d.env, "demo")
	if r.code != 0 {
		t.Fatalf("pglock demo: %v", r)
	}
	lost := map[string]int{}
	for _, m := range row.FindAllStringSubmatch(r.stdout, -1) {
		lost[m[1]], _ = strconv.Atoi(m[4])
		if exp, _ := strconv.Atoi(m[2]); exp != defaultWorkers*defaultIncrements {
			t.Errorf("expected total %d, want %d", exp, defaultWorkers*defaultIncrements)
		}
	}
	if len(lost) != 3 || lost["no lock"] <= 0 || lost["txlock"] != 0 || lost["advisory"] != 0 {
		t.Fatalf("lost updates %v, want >0 without a lock and 0 with:\n%v", lost, r)
	}
	ns := strconv.Itoa(int(demoNamespaceID))
	if !regexp.MustCompile(`pglock-demo/\d+ = \(` + ns + `,\d+\)\s+\(` + strconv.Itoa(int(uint32(demoNamespaceID))) + `, \d+, 2\)`).MatchString(r.stdout) {
		t.Errorf("demo does not show its lock in its namespace as in pg_locks:\n%s", r.stdout)
	}
	t.Logf("lost without a lock: %d of %d\n%s", lost["no lock"], defaultWorkers*defaultIncrements, r.stdout)
	if left := d.demoTables(t); len(left) != 0 {
		t.Errorf("demo tables left: %q", left)
	}
	testkit.WaitNoAdvisoryLocks(t, d.db)
}

// TestDemoKilled: a demo ended by SIGTERM drops its table on the way out; a
// demo killed with SIGKILL cannot, and the next demo drops the table it left,
// but never the table of a demo that still runs. Every lock a demo takes is
// in the demo's namespace.
func TestDemoKilled(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	// About 20 s: 40 increments of 100 ms, twice of them one at a time.
	slow := []string{"demo", "--workers", "2", "--increments", "40", "--pause", "100ms"}
	// startSlow starts a slow demo and waits until its table exists and it
	// holds locks, all in the demo's namespace.
	startSlow := func(known ...string) (*proc, string) {
		p := start(t, d.env, slow...)
		var table string
		waitFor(t, 30*time.Second, "the demo's table and locks", func() bool {
			tables := d.demoTables(t)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			locks, err := testkit.AdvisoryLocks(ctx, d.db)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range locks {
				if l.ObjSubID != 2 || l.ClassID != uint32(demoNamespaceID) {
					t.Fatalf("the demo holds %+v, outside its namespace %d", l, demoNamespaceID)
				}
			}
			for _, tb := range tables {
				if !slices.Contains(known, tb) {
					table = tb
				}
			}
			return table != "" && len(locks) > 0
		})
		return p, table
	}

	p, table := startSlow()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.wait(t, 30*time.Second)
	if left := d.demoTables(t); len(left) != 0 {
		t.Errorf("after SIGTERM: tables %q left, want %s dropped", left, table)
	}
	testkit.WaitNoAdvisoryLocks(t, d.db)

	// A slow demo runs throughout; another is killed with SIGKILL and
	// leaves its table; the next demo drops that table and leaves the
	// running one's alone.
	running, live := startSlow()
	p, killed := startSlow(live)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	p.wait(t, 30*time.Second)
	if left := d.demoTables(t); !slices.Equal(left, sorted(live, killed)) {
		t.Fatalf("after SIGKILL: tables %q, want %s and the running %s", left, killed, live)
	}
	r := pglock(t, d.env, "demo")
	if r.code != 0 || !strings.Contains(r.stdout, "dropped table "+killed+", left by a demo that was killed") || strings.Contains(r.stdout, live) {
		t.Errorf("the next demo: want it to drop %s and not %s: %v", killed, live, r)
	}
	if left := d.demoTables(t); !slices.Equal(left, []string{live}) {
		t.Errorf("after the next demo: tables %q, want only the running demo's %s", left, live)
	}
	if r := running.wait(t, 2*time.Minute); r.code != 0 {
		t.Errorf("the demo that ran alongside: %v", r)
	}
	if left := d.demoTables(t); len(left) != 0 {
		t.Errorf("tables left at the end: %q", left)
	}
	testkit.WaitNoAdvisoryLocks(t, d.db)
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

// TestDemoThrowaway runs "pglock demo" with no configuration at all, as a new
// user's first command does: it starts its own server and removes it.
func TestDemoThrowaway(t *testing.T) {
	t.Parallel()
	r := start(t, nil, "demo").wait(t, 4*time.Minute)
	if r.code != 0 && strings.Contains(r.stderr, "no PostgreSQL to run on") && os.Getenv("CI") != "true" {
		t.Skipf("no way to start a throwaway server here: %s", r.stderr)
	}
	if r.code != 0 || !strings.Contains(r.stdout, "throwaway PostgreSQL") {
		t.Fatalf("pglock demo: %v", r)
	}
	t.Logf("took %v\n%s", r.took.Round(time.Millisecond), r.stdout)
}
