package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/lockview"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// chain is three sessions in a chain of waits on the real server: A holds
// k1; B holds k2 and waits for k1; C waits for k2. Each session sets its
// application_name to its letter.
type chain struct {
	pids   map[string]int
	k1, k2 keyspace.Key
}

// startChain builds the chain on db and undoes it on cleanup: A releases,
// so B gets k1; B releases both, so C gets k2; C releases.
func startChain(t *testing.T, db *sql.DB, k1, k2 keyspace.Key) chain {
	t.Helper()
	ctx := context.Background()
	conns := map[string]*sql.Conn{}
	ch := chain{pids: map[string]int{}, k1: k1, k2: k2}
	for _, name := range []string{"A", "B", "C"} {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns[name] = c
		t.Cleanup(func() { c.Close() })
		var pid int
		if err := c.QueryRowContext(ctx, "SELECT pg_backend_pid() FROM set_config('application_name', 'chain-"+name+"', false)").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		ch.pids[name] = pid
	}
	exec := func(name, fn string, k keyspace.Key) error {
		q, args := lockSQL(fn, k)
		_, err := conns[name].ExecContext(ctx, q, args...)
		return err
	}
	for _, step := range []struct {
		name string
		key  keyspace.Key
	}{{"A", k1}, {"B", k2}} {
		if err := exec(step.name, "pg_advisory_lock", step.key); err != nil {
			t.Fatal(err)
		}
	}
	// done[name] is closed when that session's wait has ended.
	done := map[string]chan error{}
	for _, step := range []struct {
		name string
		key  keyspace.Key
	}{{"B", k1}, {"C", k2}} {
		d := make(chan error, 1)
		done[step.name] = d
		go func() {
			err := exec(step.name, "pg_advisory_lock", step.key)
			if err != nil {
				err = fmt.Errorf("%s waiting for %v: %w", step.name, step.key, err)
			}
			d <- err
		}()
		// C queues only once B waits, so the chain is the same every time.
		waitUntil(t, db, func(locks []lockview.Lock) bool {
			for _, l := range locks {
				if l.PID == ch.pids[step.name] && !l.Granted {
					return true
				}
			}
			return false
		})
	}
	t.Cleanup(func() {
		// Unwind in order; every wait ends with the lock granted.
		err := exec("A", "pg_advisory_unlock", k1)
		err = errors.Join(err, <-done["B"]) // B got k1; C waits for k2 until B lets go
		err = errors.Join(err, exec("B", "pg_advisory_unlock", k1), exec("B", "pg_advisory_unlock", k2))
		err = errors.Join(err, <-done["C"], exec("C", "pg_advisory_unlock", k2))
		if err != nil {
			t.Errorf("unwinding the chain: %v", err)
		}
	})
	return ch
}

// lockSQL is fn (pg_advisory_lock or pg_advisory_unlock) of k, by key form.
func lockSQL(fn string, k keyspace.Key) (string, []any) {
	if n, ok := k.Int64(); ok {
		return "SELECT " + fn + "($1::int8)", []any{n}
	}
	a, b, _ := k.Pair()
	return "SELECT " + fn + "($1::int4, $2::int4)", []any{a, b}
}

// waitUntil reads the locks until cond holds, for at most 20 s.
func waitUntil(t *testing.T, db *sql.DB, cond func([]lockview.Lock) bool) {
	t.Helper()
	waitFor(t, 20*time.Second, "the chain of waits", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		locks, err := lockview.Read(ctx, db, false)
		if err != nil {
			t.Fatal(err)
		}
		return cond(locks)
	})
}

// TestLsBlockingChain: three sessions in a chain of waits on the server (A
// holds k1; B holds k2 and waits for k1; C waits for k2). "pglock ls --json"
// carries the tree A -> B -> C with the keys decoded (k2 in a namespace
// named with --names), the pids, the application names and how long each
// waits; the table form draws the same tree.
func TestLsBlockingChain(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	nsID := randInt32()
	k1, k2 := keyspace.Int64(-9223372036854775807), keyspace.Pair(nsID, keyspace.Hash32("chain-k2"))
	k2Name := "chain/" + strconv.Itoa(int(keyspace.Hash32("chain-k2")))
	names := "chain=" + strconv.Itoa(int(nsID))
	ch := startChain(t, d.db, k1, k2)
	var out lsOutput
	waitFor(t, 20*time.Second, "ls to show the chain", func() bool {
		r := pglock(t, d.env, "ls", "--json", "--names", names)
		out = lsOutput{}
		if err := json.Unmarshal([]byte(r.stdout), &out); r.code != 0 || err != nil {
			t.Fatalf("pglock ls --json: %v\n%v", err, r)
		}
		return len(out.Locks) == 4
	})
	tree := out.Blocking
	if len(tree) != 1 || len(tree[0].Blocks) != 1 || len(tree[0].Blocks[0].Blocks) != 1 || len(tree[0].Blocks[0].Blocks[0].Blocks) != 0 {
		t.Fatalf("tree %+v, want A -> B -> C", tree)
	}
	a, b, c := tree[0], tree[0].Blocks[0], tree[0].Blocks[0].Blocks[0]
	check := func(n blockNode, name string, holds []string, waits string, blockedBy []int) {
		t.Helper()
		if n.PID != ch.pids[name] || n.ApplicationName != "chain-"+name {
			t.Errorf("node %s: pid %d %q, want %d chain-%s", name, n.PID, n.ApplicationName, ch.pids[name], name)
		}
		var got []string
		for _, h := range n.Holds {
			got = append(got, h.Name)
		}
		if fmt.Sprint(got) != fmt.Sprint(holds) {
			t.Errorf("node %s holds %v, want %v", name, got, holds)
		}
		switch {
		case waits == "" && (n.WaitsFor != nil || n.WaitedMS != nil):
			t.Errorf("node %s waits for %+v, want nothing", name, n.WaitsFor)
		case waits != "" && (n.WaitsFor == nil || n.WaitsFor.Name != waits || n.WaitsFor.Mode != "exclusive" || n.WaitedMS == nil || *n.WaitedMS < 0):
			t.Errorf("node %s waits for %+v (%v ms), want %s", name, n.WaitsFor, n.WaitedMS, waits)
		}
		if fmt.Sprint(n.BlockedBy) != fmt.Sprint(blockedBy) {
			t.Errorf("node %s blocked by %v, want %v", name, n.BlockedBy, blockedBy)
		}
	}
	check(a, "A", []string{k1.String()}, "", nil)
	check(b, "B", []string{k2Name}, k1.String(), []int{ch.pids["A"]})
	check(c, "C", nil, k2Name, []int{ch.pids["B"]})
	if c.WaitsFor != nil && (c.WaitsFor.Key != k2.String() || c.WaitsFor.Namespace != "chain") {
		t.Errorf("C waits for %+v, want %v in namespace chain", c.WaitsFor, k2)
	}

	r := pglock(t, d.env, "ls", "--names", names)
	pid := func(name string) string { return strconv.Itoa(ch.pids[name]) }
	want := regexp.MustCompile(`(?m)^Who blocks whom.*\n` +
		`pid ` + pid("A") + ` \(chain-A\) holds ` + regexp.QuoteMeta(k1.String()) + `\n` +
		`└─ pid ` + pid("B") + ` \(chain-B\) waits \S+ for ` + regexp.QuoteMeta(k1.String()) + ` \(exclusive\), holds ` + k2Name + `\n` +
		`   └─ pid ` + pid("C") + ` \(chain-C\) waits \S+ for ` + k2Name + ` \(exclusive\)\n`)
	if r.code != 0 || !want.MatchString(r.stdout) {
		t.Errorf("pglock ls: want the tree A -> B -> C:\n%v", r)
	}
	t.Logf("pglock ls:\n%s", r.stdout)
}
