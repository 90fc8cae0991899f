package main

import (
	"debug/buildinfo"
	"strings"
	"testing"
)

// TestExitStatuses pins the documented numbers (sysexits): 64 for a command
// line that cannot be run, 78 for connection settings that cannot work, on
// every command, before any server is asked.
func TestExitStatuses(t *testing.T) {
	t.Parallel()
	badURL := []string{"DATABASE_URL=postgres://u@host:notaport/db"}
	cases := []struct {
		env  []string
		args []string
		code int
	}{
		{nil, nil, 64},
		{nil, []string{"nosuch"}, 64},
		{nil, []string{"run", "job"}, 64},
		{nil, []string{"run", "007", "--", "true"}, 64},
		{nil, []string{"key", "--bogus", "x"}, 64},
		{nil, []string{"ls", "extra"}, 64},
		{nil, []string{"fence", "nope"}, 64},
		{badURL, []string{"run", "job", "--", "sh", "-c", "echo ran"}, 78},
		{badURL, []string{"ls"}, 78},
		{badURL, []string{"demo"}, 78},
		{badURL, []string{"fence", "show", "job"}, 78},
		{[]string{"PGPORT=x"}, []string{"run", "job", "--", "sh", "-c", "echo ran"}, 78},
		{badURL, []string{"key", "job"}, 0}, // needs no server
	}
	for _, tc := range cases {
		r := pglock(t, tc.env, tc.args...)
		if r.code != tc.code || strings.Contains(r.stdout, "ran\n") {
			t.Errorf("pglock %q with %q: want exit %d: %v", tc.args, tc.env, tc.code, r)
		}
		if tc.code != 0 && !strings.HasPrefix(r.stderr, "pglock: ") {
			t.Errorf("pglock %q: want a message on stderr: %v", tc.args, r)
		}
	}
}

// TestVersion: --version prints the module version the binary was built
// with, as its build information records it.
func TestVersion(t *testing.T) {
	t.Parallel()
	bi, err := buildinfo.ReadFile(pglockBin)
	if err != nil {
		t.Fatal(err)
	}
	want := bi.Main.Version
	if want == "" {
		want = "(devel)"
	}
	for _, arg := range []string{"--version", "-version", "version"} {
		if r := pglock(t, nil, arg); r.code != 0 || r.stdout != "pglock "+want+"\n" || r.stderr != "" {
			t.Errorf("pglock %s: want %q: %v", arg, "pglock "+want, r)
		}
	}
}
