package pgconf

import (
	"maps"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"testing"
)

// FuzzResolve: any connection string either resolves or gives an error with
// the package prefix, never a panic; what resolves writes back to a DSN that
// resolves to the very same settings, so the driver gets what the user
// wrote.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{
		"postgres://u:p@h:5433/db?sslmode=disable",
		"postgresql://h/db?connect_timeout=3&application_name=a%20b",
		"postgres://[::1]:5432/db",
		"postgres:///db?host=/var/run/postgresql&port=5433",
		"host=h port=5433 user=u password='a b\\'c' dbname=db",
		"host=/tmp dbname='x y'",
		"port=0", "port=65536", "port=-1", "port=abc", "connect_timeout=-1",
		"postgres://u@h:notaport/db", "postgres://%zz@h/db", "mysql://h/db",
		"=", "host", "host='unterminated", "'", "\\", "\x00", "postgres://",
		"postgres://h/db?sslmode=", strings.Repeat("a=b ", 3000),
	} {
		f.Add(s)
	}
	none := func(string) string { return "" }
	f.Fuzz(func(t *testing.T, dsn string) {
		s, err := Resolve(dsn, none, "fuzz")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "pgconf: ") {
				t.Fatalf("Resolve(%q): error without the package prefix: %v", dsn, err)
			}
			return
		}
		out := s.DSN()
		s2, err := Resolve(out, none, "fuzz")
		if err != nil {
			t.Fatalf("Resolve(%q) gave DSN %q, which does not resolve: %v", dsn, out, err)
		}
		// pgx reads the DSN back to the same target and credentials (it
		// refuses some parameter values, e.g. an unknown sslmode, which
		// pgconf leaves to the driver).
		if c, err := pgconn.ParseConfig(out); err == nil {
			if c.Host != s.Host || int(c.Port) != s.Port || c.User != s.User || c.Password != s.Password || c.Database != s.Database {
				t.Fatalf("Resolve(%q) = %+v\nbut pgx reads its DSN %q as host %q port %d user %q password %q database %q",
					dsn, s, out, c.Host, c.Port, c.User, c.Password, c.Database)
			}
		}
		if s.Host != s2.Host || s.Port != s2.Port || s.User != s2.User || s.Password != s2.Password ||
			s.Database != s2.Database || !maps.Equal(s.Params, s2.Params) {
			t.Fatalf("Resolve(%q) = %+v\nits DSN %q resolves to %+v", dsn, s, out, s2)
		}
	})
}
