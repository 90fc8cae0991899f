package main

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// TestFence runs the built binary: "fence init --print" needs no server,
// "fence show" before "fence init" names the fix, "fence init" creates the
// table advisory.WithFencing uses (twice: it is idempotent), and "fence
// show" prints the latest token of a key.
func TestFence(t *testing.T) {
	t.Parallel()
	r := start(t, nil, "fence", "init", "--print", "--table", "app.fence").wait(t, 30*time.Second)
	if r.code != 0 || !strings.Contains(r.stdout, `CREATE TABLE IF NOT EXISTS "app"."fence"`) ||
		!strings.Contains(r.stdout, `INSERT INTO "app"."fence" (kind, key, token, boot) VALUES (0, 0, 0, NULL) ON CONFLICT (kind, key) DO NOTHING;`) {
		t.Fatalf("fence init --print: %v", r)
	}
	for _, args := range [][]string{
		{"fence"}, {"fence", "nope"}, {"fence", "init", "--table", "x;y", "--print"}, {"fence", "init", "extra"}, {"fence", "show"},
	} {
		if r := start(t, nil, args...).wait(t, 30*time.Second); r.code != exitUsage || !strings.Contains(r.stderr, "Usage: pglock fence") {
			t.Errorf("%q: want exit %d with the usage, got %v", args, exitUsage, r)
		}
	}
	if r := start(t, nil, "fence", "--help").wait(t, 30*time.Second); r.code != 0 || !strings.Contains(r.stdout, "fence init") {
		t.Errorf("fence --help: %v", r)
	}
	d := newTestDB(t)
	name := lockName(t)
	r = start(t, d.env, "fence", "show", name).wait(t, 30*time.Second)
	if r.code != exitError || !strings.Contains(r.stderr, "pglock fence init") {
		t.Fatalf("fence show without the table: %v", r)
	}
	for range 2 {
		if r := start(t, d.env, "fence", "init").wait(t, 30*time.Second); r.code != 0 {
			t.Fatalf("fence init: %v", r)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := advisory.New(d.db, advisory.WithFencing(""))
	for range 3 {
		lease, err := l.Lock(ctx, keyspace.Hash(name))
		if err != nil {
			t.Fatal(err)
		}
		if err := lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r = start(t, d.env, "fence", "show", name).wait(t, 30*time.Second)
	// A fresh table in the server's first lifetime: epoch 1, the third
	// token of the key.
	if want := keyspace.Hash(name).String() + "\t" + strconv.FormatInt(1<<40+3, 10) + "\n"; r.code != 0 || r.stdout != want {
		t.Fatalf("fence show: want %q, got %v", want, r)
	}
	r = start(t, d.env, "fence", "show", "--key", "(1,2)").wait(t, 30*time.Second)
	if r.code != 0 || !strings.HasSuffix(r.stdout, "\t0\n") {
		t.Fatalf("fence show of a key without tokens: %v", r)
	}
	if _, err := d.db.ExecContext(ctx, "DELETE FROM pgadvisory_fence WHERE kind = 0"); err != nil {
		t.Fatal(err)
	}
	r = start(t, d.env, "fence", "show", name).wait(t, 30*time.Second)
	if r.code != exitError || !strings.Contains(r.stderr, "no epoch row") || !strings.Contains(r.stderr, "pglock fence init") {
		t.Fatalf("fence show without the epoch row: %v", r)
	}
}
