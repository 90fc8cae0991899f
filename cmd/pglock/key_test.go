package main

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestKeyGolden runs the built binary's "pglock key" and compares its output
// with testdata/*.golden (go test -run TestKeyGolden -update rewrites them).
func TestKeyGolden(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		env  []string
		args []string
	}{
		{"name", nil, []string{"key", "payment:order-123"}},
		{"number", nil, []string{"key", "42"}},
		{"number_negative", nil, []string{"key", "--", "-9223372036854775808"}},
		{"name_number", nil, []string{"key", "--name", "42"}},
		{"ns_name", nil, []string{"key", "--ns", "3", "tenant-a"}},
		{"name_quote", nil, []string{"key", "it's"}},
		{"key_bigint", nil, []string{"key", "--key", "-9223372036854775808"}},
		{"key_pair", nil, []string{"key", "--key", "(1,2)"}},
		{"ns_id", []string{"PGLOCK_NAMESPACES=orders=1"}, []string{"key", "--ns", "orders", "42"}},
		{"ns_hash", nil, []string{"key", "--ns", "3", "--hash", "tenant-a"}},
		{"json", nil, []string{"key", "--json", "daily-report-job"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := pglock(t, tc.env, tc.args...)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("pglock %q: %v", tc.args, r)
			}
			golden := filepath.Join("testdata", "key_"+tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(r.stdout), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if r.stdout != string(want) {
				t.Errorf("pglock %q:\n got:\n%s\nwant:\n%s", tc.args, r.stdout, want)
			}
		})
	}
}

// TestKeyNumbers checks the numbers "pglock key" prints against keyspace
// itself (the golden files could be wrong together with the code).
func TestKeyNumbers(t *testing.T) {
	t.Parallel()
	r := pglock(t, nil, "key", "--json", "payment:order-123")
	var ki keyInfo
	if err := json.Unmarshal([]byte(r.stdout), &ki); err != nil {
		t.Fatalf("%v\n%v", err, r)
	}
	if ki.Int64 == nil || *ki.Int64 != 4312917370057361399 {
		t.Fatalf("key of payment:order-123 = %+v, want 4312917370057361399 (DESIGN.md)", ki)
	}
	c, o, s := keyspace.Hash("payment:order-123").Lock()
	if ki.ClassID != c || ki.ObjID != o || ki.ObjSubID != s {
		t.Errorf("pg_locks columns (%d, %d, %d), want (%d, %d, %d)", ki.ClassID, ki.ObjID, ki.ObjSubID, c, o, s)
	}
}

// TestHash32 pins the namespace hash that --ns --hash computes without
// registering a namespace to keyspace's own.
func TestHash32(t *testing.T) {
	t.Parallel()
	ns := keyspace.MustNamespace("pglock-test-hash32", 12345)
	for _, name := range []string{"", "a", "tenant-a", "payment:order-123", "ünïcode", strings.Repeat("x", 1000)} {
		if got, want := keyspace.Pair(12345, keyspace.Hash32(name)), ns.Hash(name); got != want {
			t.Errorf("keyspace.Hash32(%q): %v, keyspace says %v", name, got, want)
		}
	}
}

func TestParseArgs(t *testing.T) {
	t.Parallel()
	env := func(k string) string {
		if k == "PGLOCK_NAMESPACES" {
			return "orders=1, jobs=2"
		}
		return ""
	}
	ok := []struct {
		args []string
		key  keyspace.Key
		argv []string
		try  bool
	}{
		{[]string{"run", "job", "--", "echo", "hi"}, keyspace.Hash("job"), []string{"echo", "hi"}, false},
		{[]string{"run", "job", "echo", "--", "hi"}, keyspace.Hash("job"), []string{"echo", "--", "hi"}, false},
		{[]string{"run", "--try", "42", "--", "true"}, keyspace.Int64(42), []string{"true"}, true},
		{[]string{"run", "--name", "42", "--", "true"}, keyspace.Hash("42"), []string{"true"}, false},
		{[]string{"run", "--", "-42", "--", "true"}, keyspace.Int64(-42), []string{"true"}, false},
		{[]string{"run", "0", "true"}, keyspace.Int64(0), []string{"true"}, false},
		{[]string{"run", "9223372036854775807", "true"}, keyspace.Int64(9223372036854775807), []string{"true"}, false},
		{[]string{"run", "4.2", "true"}, keyspace.Hash("4.2"), []string{"true"}, false},
		{[]string{"run", "0x2a", "true"}, keyspace.Hash("0x2a"), []string{"true"}, false},
		{[]string{"run", "--ns", "5", "n", "--", "true"}, keyspace.Pair(5, keyspace.Hash32("n")), []string{"true"}, false},
		{[]string{"run", "--ns", "5", "--name", "7", "--", "true"}, keyspace.Pair(5, keyspace.Hash32("7")), []string{"true"}, false},
		{[]string{"run", "--ns", "5", "--", "-2147483648", "--", "true"}, keyspace.Pair(5, -2147483648), []string{"true"}, false},
		{[]string{"key", "--name", "payment:order-123"}, keyspace.Hash("payment:order-123"), nil, false},
		{[]string{"run", "--key", "42", "--", "true"}, keyspace.Int64(42), []string{"true"}, false},
		{[]string{"run", "--key", "(1,2)", "true", "x"}, keyspace.Pair(1, 2), []string{"true", "x"}, false},
		{[]string{"run", "--ns", "jobs", "7", "--", "true"}, keyspace.Pair(2, 7), []string{"true"}, false},
		{[]string{"run", "--wait", "0", "n", "--", "true"}, keyspace.Hash("n"), []string{"true"}, true},
		{[]string{"run", "--ns", "5", "--hash", "n", "--", "true"}, keyspace.Pair(5, keyspace.Hash32("n")), []string{"true"}, false},
		{[]string{"key", "--ns", "orders", "42"}, keyspace.Pair(1, 42), nil, false},
	}
	for _, tc := range ok {
		c, err := parseArgs(tc.args, env)
		if err != nil {
			t.Errorf("parseArgs(%q): %v", tc.args, err)
			continue
		}
		if c.key != tc.key || strings.Join(c.argv, " ") != strings.Join(tc.argv, " ") || c.try != tc.try {
			t.Errorf("parseArgs(%q) = key %v argv %q try %v, want %v %q %v", tc.args, c.key, c.argv, c.try, tc.key, tc.argv, tc.try)
		}
	}
	bad := [][]string{
		nil,
		{"frobnicate"},
		{"run"},
		{"run", "name"},
		{"run", "name", "--"},
		{"run", "--try", "--wait", "1s", "n", "--", "true"},
		{"run", "--wait", "-1s", "n", "--", "true"},
		{"run", "--wait", "soon", "n", "--", "true"},
		{"run", "--key", "(1,2", "--", "true"},
		{"run", "--ns", "nosuch", "1", "--", "true"},
		{"run", "007", "--", "true"},
		{"run", "+42", "--", "true"},
		{"run", "-0", "--", "true"},
		{"run", "9223372036854775808", "--", "true"},
		{"run", "--ns", "1", "2147483648", "--", "true"},
		{"run", "--ns", "1", "--key", "2", "--", "true"},
		{"run", "--name", "--key", "2", "--", "true"},
		{"key", "--name"},
		{"run", "--driver", "pgx", "n", "--", "true"},
		{"run", "--keepalive", "1ns", "n", "--", "true"},
		{"run", "--", "true"},
		{"key"},
		{"key", "a", "b"},
		{"key", "--ns", "1", "--key", "2"},
		{"ls", "extra"},
		{"ls", "--bogus"},
		{"demo", "--workers", "1"},
		{"key", "--names", "x", "a"},
	}
	for _, args := range bad {
		if c, err := parseArgs(args, env); err == nil {
			t.Errorf("parseArgs(%q) = %+v, want an error", args, c)
		} else if _, ok := err.(*usageError); !ok {
			t.Errorf("parseArgs(%q): %T %v, want a *usageError", args, err, err)
		}
	}
	for _, args := range [][]string{{"--help"}, {"help", "run"}, {"run", "--help"}, {"key", "-h"}, {"ls", "--help"}, {"demo", "--help"}} {
		if c, err := parseArgs(args, env); err != nil || !c.help {
			t.Errorf("parseArgs(%q) = %+v, %v; want help", args, c, err)
		}
	}
}

// TestUsage runs the binary: --help prints usage and exits 0 for every
// command; an unknown command or flag prints usage and exits 2.
func TestUsage(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"key", "run", "ls", "demo"} {
		r := pglock(t, nil, cmd, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "Usage: pglock "+cmd) {
			t.Errorf("pglock %s --help: %v", cmd, r)
		}
		r = pglock(t, nil, cmd, "--no-such-flag")
		if r.code != exitUsage || !strings.Contains(r.stderr, "Usage: pglock "+cmd) {
			t.Errorf("pglock %s --no-such-flag: %v", cmd, r)
		}
	}
	for _, args := range [][]string{{}, {"nosuch"}} {
		r := pglock(t, nil, args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "Usage:") {
			t.Errorf("pglock %q: %v", args, r)
		}
	}
	if r := pglock(t, nil, "--help"); r.code != 0 || !strings.Contains(r.stdout, "pglock run") {
		t.Errorf("pglock --help: %v", r)
	}
}

// FuzzParseArgs feeds parseArgs arbitrary command lines (NUL separates the
// arguments): it must never panic, and what it accepts must be runnable.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"run\x00--try\x00job\x00--\x00echo\x00hi",
		"run\x00--wait\x001s\x00--key\x00(1,2)\x00--\x00true",
		"run\x00--ns\x00orders\x00--hash\x00x\x00cmd",
		"key\x00--ns\x00-2147483648\x002147483647",
		"key\x00--json\x00--key\x00-9223372036854775808",
		"ls\x00--json\x00--all\x00--names\x00a=1,b=2",
		"demo\x00--workers\x003",
		"help\x00run",
		"run\x00--\x00--\x00--",
	} {
		f.Add(s, "orders=1")
	}
	f.Fuzz(func(t *testing.T, line, names string) {
		args := strings.Split(line, "\x00")
		env := func(k string) string {
			if k == "PGLOCK_NAMESPACES" {
				return names
			}
			return ""
		}
		c, err := parseArgs(args, env)
		if err != nil {
			if _, ok := err.(*usageError); !ok {
				t.Fatalf("parseArgs(%q): %T, want *usageError", args, err)
			}
			return
		}
		if c.help {
			return
		}
		switch c.name {
		case "run":
			if len(c.argv) == 0 || (c.try && c.wait != 0) || c.keepalive <= 0 || c.grace < 0 {
				t.Fatalf("parseArgs(%q) accepted %+v", args, c)
			}
		case "key", "ls", "demo":
		default:
			t.Fatalf("parseArgs(%q) accepted command %q", args, c.name)
		}
		if c.name == "key" || c.name == "run" {
			_ = describeKey(c)
		}
	})
}
