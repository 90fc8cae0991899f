package lockview

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// render writes trees as "pid[child child]" for comparison.
func render(nodes []Node) string {
	var parts []string
	for _, n := range nodes {
		s := fmt.Sprint(n.PID)
		if len(n.Blocks) > 0 {
			s += "[" + render(n.Blocks) + "]"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func TestBlocking(t *testing.T) {
	now := time.Now()
	held := func(pid int, key int64) Lock {
		return Lock{PID: pid, Key: keyspace.Int64(key), Granted: true, Now: now}
	}
	wait := func(pid int, key int64, waited time.Duration, blockers ...int) Lock {
		ws := now.Add(-waited)
		return Lock{PID: pid, Key: keyspace.Int64(key), Now: now, WaitStart: &ws, BlockedBy: blockers}
	}
	cases := []struct {
		name  string
		locks []Lock
		want  string
	}{
		{"none", nil, ""},
		{"holders only", []Lock{held(1, 1), held(2, 2)}, ""},
		{"chain", []Lock{held(1, 1), held(2, 2), wait(2, 1, 3*time.Second, 1), wait(3, 2, time.Second, 2)}, "1[2[3]]"},
		// A queue on one key: 3 waits behind both 1 (holder) and 2 (queued
		// ahead); it shows under 2 only.
		{"queue", []Lock{held(1, 1), wait(2, 1, 2*time.Second, 1), wait(3, 1, time.Second, 1, 2)}, "1[2[3]]"},
		// Two shared holders block one exclusive waiter: it shows under each.
		{"shared holders", []Lock{held(1, 1), held(2, 1), wait(3, 1, time.Second, 1, 2)}, "1[3] 2[3]"},
		// Waiters of the same blocker: longest waiter first.
		{"siblings", []Lock{held(1, 1), held(1, 2), wait(3, 2, time.Second, 1), wait(2, 1, 2*time.Second, 1)}, "1[2 3]"},
		// A blocker that is not listed (another database, no advisory lock).
		{"blocker not listed", []Lock{wait(5, 1, time.Second, 99)}, "5"},
		// A deadlock before the server breaks it: cut where it closes.
		{"cycle", []Lock{held(1, 1), held(2, 2), wait(1, 2, 2*time.Second, 2), wait(2, 1, time.Second, 1)}, "1[2]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Blocking(tc.locks)
			if r := render(got); r != tc.want {
				t.Errorf("Blocking = %q, want %q", r, tc.want)
			}
		})
	}
}

// TestBlockingNode checks what a node carries: the keys held and awaited
// and every pid pg_blocking_pids named.
func TestBlockingNode(t *testing.T) {
	now := time.Now()
	ws := now.Add(-time.Second)
	locks := []Lock{
		{PID: 1, Key: keyspace.Int64(1), Granted: true, Now: now, ApplicationName: "a"},
		{PID: 2, Key: keyspace.Int64(1), Now: now, WaitStart: &ws, BlockedBy: []int{1}, ApplicationName: "b"},
		{PID: 2, Key: keyspace.Pair(3, 4), Granted: true, Now: now, ApplicationName: "b"},
		{PID: 3, Key: keyspace.Pair(3, 4), Now: now, WaitStart: &ws, BlockedBy: []int{2, 1}, ApplicationName: "c"},
	}
	got := Blocking(locks)
	if len(got) != 1 || len(got[0].Blocks) != 1 || len(got[0].Blocks[0].Blocks) != 1 {
		t.Fatalf("Blocking = %q, want 1[2[3]]", render(got))
	}
	a, b, c := got[0], got[0].Blocks[0], got[0].Blocks[0].Blocks[0]
	if a.ApplicationName != "a" || a.Waits != nil || len(a.Holds) != 1 || a.Holds[0].Key != keyspace.Int64(1) {
		t.Errorf("root: %+v", a)
	}
	if b.Waits == nil || b.Waits.Key != keyspace.Int64(1) || len(b.Holds) != 1 || b.Holds[0].Key != keyspace.Pair(3, 4) {
		t.Errorf("middle: %+v", b)
	}
	if c.Waits == nil || c.Waits.Key != keyspace.Pair(3, 4) || fmt.Sprint(c.BlockedBy) != "[2 1]" {
		t.Errorf("leaf: %+v", c)
	}
	if d, ok := c.Waits.Waited(); !ok || d != time.Second {
		t.Errorf("leaf waited %v %v, want 1s", d, ok)
	}
}
