package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/pgadvisory/pgadvisory/internal/pgerr"
)

// defaultConnectTimeout bounds a connection attempt when neither the
// connection string nor PGCONNECT_TIMEOUT sets connect_timeout.
const defaultConnectTimeout = 10 * time.Second

// pgEnv are the libpq environment variables pgconn reads, named in messages
// so that a bad one can be found.
var pgEnv = []string{
	"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGSERVICEFILE",
	"PGSSLMODE", "PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT", "PGSSLPASSWORD", "PGOPTIONS", "PGAPPNAME",
	"PGCONNECT_TIMEOUT", "PGTARGETSESSIONATTRS", "PGTZ",
}

// configError is connection settings that cannot be used as they are: a
// malformed connection string, a missing service, a database or role that
// does not exist. Trying again will not help; pglock exits with exitConfig.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// target is where a command connects: the settings pgx resolved and where
// they came from.
type target struct {
	cfg  *pgx.ConnConfig
	from string // "--dsn", "DATABASE_URL", or the PG* variables set
}

// resolve reads the connection settings: --dsn, else DATABASE_URL, is the
// connection string; pgx's ParseConfig fills in the rest from the PG*
// variables, the service file, the passfile and libpq's defaults, as libpq
// would. appName is the application_name unless the settings name one.
func resolve(c *command, env func(string) string, appName string) (target, error) {
	conn, from := c.dsn, "--dsn"
	if conn == "" {
		conn, from = env("DATABASE_URL"), "DATABASE_URL"
	}
	if conn == "" {
		from = "the environment"
	}
	var set []string
	for _, v := range pgEnv {
		if env(v) != "" {
			set = append(set, v)
		}
	}
	if len(set) > 0 {
		from += " (" + strings.Join(set, ", ") + ")"
	}
	if i := strings.Index(conn, "://"); i >= 0 && conn[:i] != "postgres" && conn[:i] != "postgresql" {
		return target{}, &configError{fmt.Errorf("bad connection string from %s: a URL must start with postgres:// or postgresql://", from)}
	}
	cfg, err := pgx.ParseConfig(conn)
	if err != nil {
		return target{}, &configError{fmt.Errorf("bad connection settings from %s: %w", from, err)}
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok && appName != "" {
		cfg.RuntimeParams["application_name"] = appName
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	return target{cfg: cfg, from: from}, nil
}

// Addr is the first address the settings point at: host:port or a socket.
func (t target) Addr() string {
	_, addr := pgconn.NetworkAddress(t.cfg.Host, t.cfg.Port)
	return addr
}

// String names the target without the password, for messages.
func (t target) String() string {
	return fmt.Sprintf("%s (user %q, database %q; settings from %s)", t.Addr(), t.cfg.User, t.cfg.Database, t.from)
}

// open connects through pgx's database/sql driver and checks that the
// server answers. A server that refuses the settings themselves (no such
// database or role, a wrong password) gives a *configError.
func (t target) open(ctx context.Context) (*sql.DB, error) {
	db := stdlib.OpenDB(*t.cfg)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		switch {
		case isConfigRefusal(err):
			return nil, &configError{fmt.Errorf("PostgreSQL at %s refused the connection settings: %w", t, err)}
		case ctx.Err() == nil && pgconn.Timeout(err):
			return nil, fmt.Errorf("cannot connect to PostgreSQL at %s: no answer within %v: %w", t, t.cfg.ConnectTimeout, err)
		}
		return nil, fmt.Errorf("cannot connect to PostgreSQL at %s: %w", t, err)
	}
	return db, nil
}

// isConfigRefusal reports whether the server refused the connection for a
// reason that only a change of settings cures.
func isConfigRefusal(err error) bool {
	switch pgerr.SQLState(err) {
	case "3D000", // invalid_catalog_name: no such database
		"28000", // invalid_authorization_specification: no such role, pg_hba rejects
		"28P01": // invalid_password
		return true
	}
	return false
}

// open resolves the connection settings and connects.
func open(ctx context.Context, c *command, env func(string) string, appName string) (*sql.DB, target, error) {
	t, err := resolve(c, env, appName)
	if err != nil {
		return nil, t, err
	}
	db, err := t.open(ctx)
	return db, t, err
}

// isConfig reports whether err is a configuration error.
func isConfig(err error) bool {
	var ce *configError
	return errors.As(err, &ce)
}
