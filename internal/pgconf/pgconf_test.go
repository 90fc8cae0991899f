package pgconf

import (
	"context"
	"net"
	"os/user"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/lib/pq"
)

func env(kv ...string) Env {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestResolve(t *testing.T) {
	socketDirs = nil // no local socket: the default host is localhost
	osUser := ""
	if u, err := user.Current(); err == nil {
		osUser = u.Username
	}
	cases := []struct {
		name       string
		dsn        string
		env        Env
		addr       string
		user, db   string
		pass, from string
		params     map[string]string
	}{
		{"defaults", "", env(), "localhost:5432", osUser, osUser, "", "the PG* environment",
			map[string]string{"sslmode": "prefer", "connect_timeout": "10", "application_name": "app"}},
		{"pg env", "", env("PGHOST", "db.example", "PGPORT", "6543", "PGUSER", "alice", "PGPASSWORD", "s3cret",
			"PGDATABASE", "shop", "PGSSLMODE", "require", "PGCONNECT_TIMEOUT", "3", "PGAPPNAME", "cron"),
			"db.example:6543", "alice", "shop", "s3cret", "the PG* environment",
			map[string]string{"sslmode": "require", "connect_timeout": "3", "application_name": "cron"}},
		{"url", "postgres://bob:p%40ss@10.0.0.1:5433/orders?sslmode=disable", env("PGUSER", "alice", "PGDATABASE", "x"),
			"10.0.0.1:5433", "bob", "orders", "p@ss", "--dsn", map[string]string{"sslmode": "disable"}},
		{"url fills from env", "postgresql:///orders", env("PGHOST", "h", "PGUSER", "carol"),
			"h:5432", "carol", "orders", "", "--dsn", nil},
		{"database url", "", env("DATABASE_URL", "postgres://dan@[::1]:5000/d", "PGHOST", "ignored"),
			"[::1]:5000", "dan", "d", "", "DATABASE_URL", nil},
		{"keywords", "host=h1 port=7000 user='e ve' password='it\\'s' dbname=db1 sslmode=verify-full", env(),
			"h1:7000", "e ve", "db1", "it's", "--dsn", map[string]string{"sslmode": "verify-full"}},
		{"socket", "host=/var/run/postgresql user=u", env(), "/var/run/postgresql/.s.PGSQL.5432", "u", "u", "", "--dsn", nil},
		{"odd host", "host=a#b:c user=u", env(), "[a#b:c]:5432", "u", "u", "", "--dsn", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Resolve(tc.dsn, tc.env, "app")
			if err != nil {
				t.Fatal(err)
			}
			if s.Addr() != tc.addr || s.User != tc.user || s.Database != tc.db || s.Password != tc.pass || s.From != tc.from {
				t.Errorf("got %s pass %q, want %s user %q db %q pass %q from %s", s, s.Password, tc.addr, tc.user, tc.db, tc.pass, tc.from)
			}
			for k, v := range tc.params {
				if s.Params[k] != v {
					t.Errorf("param %s = %q, want %q", k, s.Params[k], v)
				}
			}
			if strings.Contains(s.String(), "s3cret") || (tc.pass != "" && strings.Contains(s.String(), tc.pass)) {
				t.Errorf("String shows the password: %s", s)
			}
			// The DSN reads back to the same settings.
			back, err := Resolve(s.DSN(), env(), "")
			if err != nil {
				t.Fatalf("DSN %s: %v", s.DSN(), err)
			}
			if back.Addr() != s.Addr() || back.User != s.User || back.Database != s.Database || back.Password != s.Password {
				t.Errorf("DSN %s reads back as %s", s.DSN(), back)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	cases := []struct {
		dsn  string
		env  Env
		want string
	}{
		{"mysql://u@h/db", env(), "postgres://"},
		{"postgres://u@h:99999/db", env(), "port"},
		{"postgres://u@h:x/db", env(), "not a valid URL"},
		{"host=h port", env(), "not keyword=value"},
		{"host='unterminated", env(), "unterminated"},
		{"=x", env(), "empty parameter"},
		{"", env("DATABASE_URL", "http://x"), "DATABASE_URL"},
		{"", env("PGPORT", "0"), "PGPORT"},
		{"connect_timeout=-1", env(), "connect_timeout"},
		{"host=a,b", env(), "list"},
		{"postgres://a,b/db", env(), "list"},
		{"", env("PGHOST", "a,b"), "PGHOST"},
		{strings.Repeat("a", 4*maxDSN+1), env(), "limit"},
		{"application_name=" + strings.Repeat("a", maxDSN), env(), "limit"},
		{"postgres://h/db?a%20b=c", env(), "not a libpq keyword"},
	}
	for _, tc := range cases {
		_, err := Resolve(tc.dsn, tc.env, "")
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "pgconf: ") {
			t.Errorf("Resolve(%.40q): %v, want an error about %q", tc.dsn, err, tc.want)
		}
	}
	// A bad URL's error does not repeat the password.
	if _, err := Resolve("postgres://u:topsecret@h:x/db", env(), ""); err == nil || strings.Contains(err.Error(), "topsecret") {
		t.Errorf("error shows the password: %v", err)
	}
}

// TestOpenUnreachable: a refused port fails at once, a silent one after the
// connect timeout; both errors name the address. No server needed.
func TestOpenUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silent := ln.Addr().String()
	defer ln.Close() // accepts into the backlog, never answers

	refusedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := refusedLn.Addr().String()
	refusedLn.Close()

	for _, driver := range []string{"postgres", "pgx"} {
		for _, tc := range []struct{ addr, want string }{
			{refused, "cannot connect to PostgreSQL at " + refused},
			{silent, "no answer within 1s"},
		} {
			s, err := Resolve("postgres://u@"+tc.addr+"/db?sslmode=disable&connect_timeout=1", env(), "")
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			db, err := Open(context.Background(), driver, s)
			if err == nil {
				db.Close()
				t.Fatalf("%s: Open %s succeeded", driver, tc.addr)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.addr) {
				t.Errorf("%s: Open %s: %v, want %q", driver, tc.addr, err, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("%s: Open %s took %v with connect_timeout=1", driver, tc.addr, d)
			}
		}
	}
}
