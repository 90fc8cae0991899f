package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// TestConnSettings points pglock at the test database through the PG*
// variables alone, through a service file (PGSERVICE, and service= in the
// connection string), and through DATABASE_URL with the rest from PG*
// variables: each time "pglock ls" lists the lock the test holds there, so
// it connected to that database, as the user the settings name.
func TestConnSettings(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	key := keyspace.Pair(31, 7)
	d.hold(t, key, false)
	cfg, err := pgx.ParseConfig(d.dsn)
	if err != nil {
		t.Fatal(err)
	}
	host, port := cfg.Host, strconv.Itoa(int(cfg.Port))
	services := filepath.Join(t.TempDir(), "pg_service.conf")
	svc := "[pglock_test]\nhost=" + host + "\nport=" + port + "\nuser=" + cfg.User + "\ndbname=" + cfg.Database + "\nsslmode=disable\n" +
		"[pglock_test_nodb]\nhost=" + host + "\nport=" + port + "\nuser=" + cfg.User + "\nsslmode=disable\n"
	if err := os.WriteFile(services, []byte(svc), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		env  []string
	}{
		{"pg-env", []string{"PGHOST=" + host, "PGPORT=" + port, "PGUSER=" + cfg.User, "PGDATABASE=" + cfg.Database, "PGSSLMODE=disable"}},
		{"service-env", []string{"PGSERVICEFILE=" + services, "PGSERVICE=pglock_test"}},
		{"service-in-dsn", []string{"PGSERVICEFILE=" + services, "DATABASE_URL=service=pglock_test_nodb dbname=" + cfg.Database}},
		{"url-plus-env", []string{"DATABASE_URL=postgres://" + host + ":" + port + "/" + cfg.Database, "PGUSER=" + cfg.User, "PGSSLMODE=disable"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := pglock(t, tc.env, "ls", "--json")
			if r.code != 0 || !strings.Contains(r.stdout, `"key": "(31,7)"`) {
				t.Errorf("pglock ls with %q: want the test's lock (31,7) listed: %v", tc.env, r)
			}
		})
	}
}
