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
		!strings.Contains(r.stdout, `CREATE SEQUENCE IF NOT EXISTS "app"."fence_seq"`) ||
		!strings.Contains(r.stdout, `INSERT INTO "app"."fence" (one, epoch, base, boot) VALUES (true, 0, 0, NULL) ON CONFLICT (one) DO NOTHING;`) {
		t.Fatalf("fence init --print: %v", r)
	}
	r = start(t, nil, "fence", "migrate", "--print", "--table", "app.fence").wait(t, 30*time.Second)
	if r.code != 0 || !strings.Contains(r.stdout, `DROP TABLE "app"."fence"`) || !strings.HasSuffix(r.stdout, "COMMIT;\n") {
		t.Fatalf("fence migrate --print: %v", r)
	}
	for _, args := range [][]string{
		{"fence"}, {"fence", "nope"}, {"fence", "init", "--table", "x;y", "--print"}, {"fence", "init", "extra"}, {"fence", "show", "--ns", "x"},
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
	// token of the table (of any key).
	if want := keyspace.Hash(name).String() + "\t" + strconv.FormatInt(1<<40+3, 10) + "\n"; r.code != 0 || r.stdout != want {
		t.Fatalf("fence show: want %q, got %v", want, r)
	}
	r = start(t, d.env, "fence", "show").wait(t, 30*time.Second)
	if want := strconv.FormatInt(1<<40+3, 10) + "\n"; r.code != 0 || r.stdout != want {
		t.Fatalf("fence show without a key: want %q, got %v", want, r)
	}
	// A table of the per-key layout of earlier versions: init names the
	// fix and prints its SQL; migrate applies it.
	if _, err := d.db.ExecContext(ctx, "CREATE TABLE old_fence (kind int2 NOT NULL, key int8 NOT NULL, token int8 NOT NULL, boot text, PRIMARY KEY (kind, key)); INSERT INTO old_fence VALUES (0, 0, 3, NULL), (1, 1, 3298534883329, NULL)"); err != nil {
		t.Fatal(err)
	}
	r = start(t, d.env, "fence", "init", "--table", "old_fence").wait(t, 30*time.Second)
	if r.code != exitError || !strings.Contains(r.stderr, "pglock fence migrate --table old_fence") || !strings.Contains(r.stderr, `DROP TABLE "old_fence"`) {
		t.Fatalf("fence init on the old layout: %v", r)
	}
	if r := start(t, d.env, "fence", "migrate", "--table", "old_fence").wait(t, 30*time.Second); r.code != 0 {
		t.Fatalf("fence migrate: %v", r)
	}
	lease, err := advisory.New(d.db, advisory.WithFencing("old_fence")).Lock(ctx, keyspace.Int64(1))
	if err != nil || lease.Token() <= 3<<40+1 {
		t.Fatalf("after fence migrate: %v, token above %d", err, int64(3<<40+1))
	}
	lease.Release(ctx)
	if _, err := d.db.ExecContext(ctx, "DELETE FROM pgadvisory_fence"); err != nil {
		t.Fatal(err)
	}
	r = start(t, d.env, "fence", "show", name).wait(t, 30*time.Second)
	if r.code != exitError || !strings.Contains(r.stderr, "no epoch row") || !strings.Contains(r.stderr, "pglock fence init") {
		t.Fatalf("fence show without the epoch row: %v", r)
	}
}
