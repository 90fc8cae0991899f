package mocktest_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

var update = flag.Bool("update", false, "rewrite testdata/statements.golden")

// TestStatementsGolden pins the text of every statement advisory and txlock
// send (and so every statement these expectations match), in both styles:
// a change to the SQL fails here and must be looked at and accepted with
// go test ./mocktest -run Golden -update.
func TestStatementsGolden(t *testing.T) {
	var b strings.Builder
	keys := []keyspace.Key{keyspace.Int64(-9223372036854775808), keyspace.Pair(-7, 2147483647)}
	add := func(name string, q string, args []any) {
		fmt.Fprintf(&b, "%s\n  %s\n  args %v\n", name, q, args)
	}
	for _, st := range []struct {
		name  string
		style sqltext.Style
	}{{"params", sqltext.Params}, {"inline", sqltext.Inline}} {
		for _, m := range []sqltext.Mode{{}, {Shared: true}, {Try: true}, {Shared: true, Try: true}} {
			for _, timeout := range []time.Duration{0, 1500 * time.Millisecond} {
				for _, k := range keys {
					q, a := sqltext.Lock(st.style, m, k, timeout)
					add(fmt.Sprintf("%s Lock %+v %v %v", st.name, m, timeout, k), q, a)
					q, a = sqltext.XactLock(st.style, m, k, timeout)
					add(fmt.Sprintf("%s XactLock %+v %v %v", st.name, m, timeout, k), q, a)
					q, a = sqltext.XactLockExec(st.style, m, k, timeout)
					add(fmt.Sprintf("%s XactLockExec %+v %v %v", st.name, m, timeout, k), q, a)
					q, a = sqltext.LockExec(st.style, m, k, timeout)
					add(fmt.Sprintf("%s LockExec %+v %v %v", st.name, m, timeout, k), q, a)
				}
				q, a := sqltext.LockAll(st.style, m, keys, timeout)
				add(fmt.Sprintf("%s LockAll %+v %v", st.name, m, timeout), q, a)
				if st.style == sqltext.Params {
					// Fenced acquires are built in the Params style only:
					// sent as they are (pgx, and go-sqlmock's expectations),
					// or prepared (lib/pq).
					q, a = sqltext.LockFenced(st.style, m, keys[1], timeout, `"public"."fence"`)
					add(fmt.Sprintf("%s LockFenced %+v %v", st.name, m, timeout), q, a)
					q, a = sqltext.LockAllFenced(st.style, m, keys, timeout, `"pgadvisory_fence"`)
					add(fmt.Sprintf("%s LockAllFenced %+v %v", st.name, m, timeout), q, a)
					// What lib/pq sends instead of the fenced statements'
					// text (advisory's Locker.fencedRow).
					q, a = sqltext.LockFenced(st.style, m, keys[1], timeout, `"public"."fence"`)
					p := sqltext.PrepareFenced(q, a)
					add(fmt.Sprintf("prepared LockFenced %+v %v", m, timeout), p.Execute, nil)
					add(fmt.Sprintf("prepared LockFenced %+v %v: prepare", m, timeout), p.Prepare, nil)
					q, a = sqltext.LockAllFenced(st.style, m, keys, timeout, `"pgadvisory_fence"`)
					p = sqltext.PrepareFenced(q, a)
					add(fmt.Sprintf("prepared LockAllFenced %+v %v", m, timeout), p.Execute, nil)
				}
				q, a = sqltext.XactLockAll(st.style, m, keys, timeout)
				add(fmt.Sprintf("%s XactLockAll %+v %v", st.name, m, timeout), q, a)
			}
		}
		for _, shared := range []bool{false, true} {
			for _, k := range keys {
				q, a := sqltext.Unlock(st.style, shared, k)
				add(fmt.Sprintf("%s Unlock shared=%v %v", st.name, shared, k), q, a)
			}
		}
	}
	add("Ping", sqltext.Ping, nil)
	for i, q := range sqltext.FenceTable(`"pgadvisory_fence"`) {
		add(fmt.Sprintf("FenceTable %d", i), q, nil)
	}
	for i, q := range sqltext.FenceMigrate(`"app"."fence"`) {
		add(fmt.Sprintf("FenceMigrate %d", i), q, nil)
	}
	const ft = `"pgadvisory_fence"`
	add("FenceDraw", sqltext.FenceDraw(ft), nil)
	add("FenceDrawTx", sqltext.FenceDrawTx(ft), nil)
	add("FenceRedraw", sqltext.FenceRedraw(ft), nil)
	add("FenceRead", sqltext.FenceRead(ft), nil)
	add("FenceBump 7 8796093022207", sqltext.FenceBump(ft, 7, 1<<43-1), nil)
	add("FenceSetCache", sqltext.FenceSetCache(ft, "8796093022208,9895604649983"), nil)
	add("FenceLayout", sqltext.FenceLayout(ft), nil)
	add("FenceStatus", sqltext.FenceStatus(ft), nil)
	add("UnlockAll", sqltext.UnlockAll, nil)

	path := filepath.Join("testdata", "statements.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("the SQL sent changed (line %d):\n got  %s\n want %s\nif intended, run go test ./mocktest -run Golden -update", i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("the SQL sent changed (%d lines, golden has %d); if intended, run go test ./mocktest -run Golden -update", len(gl), len(wl))
	}
}
