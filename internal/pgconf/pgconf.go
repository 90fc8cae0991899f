// Package pgconf resolves PostgreSQL connection settings the way libpq does,
// for the pglock command: a connection string (URL or keyword=value form)
// from a flag or DATABASE_URL, with every setting it leaves out taken from the
// PG* environment variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE,
// PGSSLMODE, PGCONNECT_TIMEOUT, PGAPPNAME) and then from libpq's defaults.
//
// The result is one URL-form DSN that lib/pq and pgx's stdlib read alike, and
// the host, port, user and database it names, so that a failure to connect
// can say where it tried.
package pgconf

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DefaultConnectTimeout bounds a connection attempt when neither the
// connection string nor PGCONNECT_TIMEOUT sets connect_timeout.
const DefaultConnectTimeout = 10 * time.Second

// maxDSN bounds the connection string read; real ones are far shorter.
const maxDSN = 8 << 10

// Settings is a resolved connection: where to, as whom, and the DSN to hand
// to a driver.
type Settings struct {
	Host     string // a host name, an IP address, or a Unix socket directory (starts with "/")
	Port     int
	User     string
	Password string
	Database string
	// Params are the other connection parameters (sslmode, connect_timeout,
	// application_name, ...), keyed by their libpq names.
	Params map[string]string
	// From says where the connection string came from ("--dsn",
	// "DATABASE_URL", or "the PG* environment"), for error messages.
	From string
}

// Env reads environment variables; os.Getenv in production, a map in tests.
type Env func(string) string

// Resolve builds Settings from dsn (the --dsn flag; may be empty), then
// DATABASE_URL, then the PG* variables of env, then libpq's defaults, the
// first source that sets a value winning. appName is the application_name to
// use when neither the connection string nor PGAPPNAME sets one.
func Resolve(dsn string, env Env, appName string) (Settings, error) {
	if env == nil {
		env = os.Getenv
	}
	s := Settings{Params: map[string]string{}, From: "the PG* environment"}
	switch {
	case dsn != "":
		s.From = "--dsn"
	case env("DATABASE_URL") != "":
		dsn, s.From = env("DATABASE_URL"), "DATABASE_URL"
	}
	if dsn != "" {
		if err := s.parse(dsn); err != nil {
			return Settings{}, fmt.Errorf("pgconf: bad connection string from %s: %w", s.From, err)
		}
	}
	if err := s.fill(env, appName); err != nil {
		return Settings{}, err
	}
	return s, nil
}

// parse reads a URL or keyword=value connection string into s.
func (s *Settings) parse(dsn string) error {
	// The text may be escaped (a URL triples a byte as %XX); the limit is
	// on what it says, checked after parsing, so that DSN's own output
	// always reads back.
	if len(dsn) > 4*maxDSN {
		return fmt.Errorf("%d bytes long, the limit is %d", len(dsn), 4*maxDSN)
	}
	if err := s.parseText(dsn); err != nil {
		return err
	}
	n := len(s.Host) + len(s.User) + len(s.Password) + len(s.Database)
	for k, v := range s.Params {
		n += len(k) + len(v)
	}
	if n > maxDSN {
		return fmt.Errorf("its settings are %d bytes long, the limit is %d", n, maxDSN)
	}
	return nil
}

func (s *Settings) parseText(dsn string) error {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return s.parseURL(dsn)
	}
	if strings.Contains(dsn, "://") {
		return errors.New("a URL must start with postgres:// or postgresql://")
	}
	kv, err := parseKeywords(dsn)
	if err != nil {
		return err
	}
	for k, v := range kv {
		if err := s.set(k, v); err != nil {
			return err
		}
	}
	return nil
}

func (s *Settings) parseURL(dsn string) error {
	u, err := url.Parse(dsn)
	if err != nil {
		// url.Parse quotes the whole string, password included: say less.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("not a valid URL: %v", err)
	}
	if u.User != nil {
		s.User = u.User.Username()
		s.Password, _ = u.User.Password()
	}
	if h := u.Hostname(); h != "" {
		if err := s.set("host", h); err != nil {
			return err
		}
	}
	if p := u.Port(); p != "" {
		if err := s.set("port", p); err != nil {
			return err
		}
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		s.Database = db
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fmt.Errorf("bad query parameters: %v", err)
	}
	for k, vs := range q {
		if len(vs) > 0 {
			if err := s.set(k, vs[len(vs)-1]); err != nil {
				return err
			}
		}
	}
	return nil
}

// set stores one libpq keyword.
func (s *Settings) set(k, v string) error {
	switch k {
	case "host":
		if strings.Contains(v, ",") {
			return fmt.Errorf("host %q is a list: pglock connects to one host", v)
		}
		s.Host = v
	case "port":
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("port %q is not a number from 1 to 65535", v)
		}
		s.Port = p
	case "user":
		s.User = v
	case "password":
		s.Password = v
	case "dbname":
		s.Database = v
	case "":
		return errors.New("empty parameter name")
	default:
		for _, c := range k {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
				return fmt.Errorf("parameter name %q is not a libpq keyword", k)
			}
		}
		s.Params[k] = v
	}
	return nil
}

// parseKeywords reads libpq's keyword=value form: pairs separated by spaces,
// values optionally in single quotes, with \' and \\ escapes.
func parseKeywords(s string) (map[string]string, error) {
	out := map[string]string{}
	i := 0
	skip := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
	}
	for {
		skip()
		if i >= len(s) {
			return out, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ' ' && s[i] != '\t' {
			i++
		}
		key := s[start:i]
		skip()
		if i >= len(s) || s[i] != '=' {
			return nil, fmt.Errorf("%q is not keyword=value (or a postgres:// URL)", key)
		}
		i++
		skip()
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				i++
				if c == '\\' && i < len(s) {
					val.WriteByte(s[i])
					i++
					continue
				}
				if c == '\'' {
					closed = true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return nil, fmt.Errorf("unterminated quoted value for %q", key)
			}
		} else {
			for i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
				i++
			}
		}
		if key == "" {
			return nil, errors.New("empty parameter name")
		}
		out[key] = val.String()
	}
}

// fill applies the environment and the defaults to what is still unset.
func (s *Settings) fill(env Env, appName string) error {
	if s.Host == "" {
		if err := s.set("host", env("PGHOST")); err != nil {
			return fmt.Errorf("pgconf: PGHOST: %w", err)
		}
	}
	if s.Port == 0 {
		if p := env("PGPORT"); p != "" {
			if err := s.set("port", p); err != nil {
				return fmt.Errorf("pgconf: PGPORT: %w", err)
			}
		} else {
			s.Port = 5432
		}
	}
	if s.Host == "" {
		s.Host = defaultHost(s.Port)
	}
	if s.User == "" {
		s.User = env("PGUSER")
	}
	if s.User == "" {
		if u, err := user.Current(); err == nil {
			s.User = u.Username
		}
	}
	if s.Password == "" {
		s.Password = env("PGPASSWORD")
	}
	if s.Database == "" {
		s.Database = env("PGDATABASE")
	}
	if s.Database == "" {
		s.Database = s.User
	}
	for param, name := range map[string]string{
		"sslmode":          "PGSSLMODE",
		"connect_timeout":  "PGCONNECT_TIMEOUT",
		"application_name": "PGAPPNAME",
	} {
		if _, ok := s.Params[param]; !ok {
			if v := env(name); v != "" {
				s.Params[param] = v
			}
		}
	}
	if _, ok := s.Params["sslmode"]; !ok {
		s.Params["sslmode"] = "prefer" // libpq's default; lib/pq's own is "require"
	}
	if _, ok := s.Params["application_name"]; !ok && appName != "" {
		s.Params["application_name"] = appName
	}
	if v, ok := s.Params["connect_timeout"]; ok {
		if n, err := strconv.Atoi(v); err != nil || n < 0 {
			return fmt.Errorf("pgconf: connect_timeout %q is not a whole number of seconds", v)
		}
	} else {
		s.Params["connect_timeout"] = strconv.Itoa(int(DefaultConnectTimeout / time.Second))
	}
	return nil
}

// socketDirs are where libpq-built servers usually put their Unix socket.
var socketDirs = []string{"/var/run/postgresql", "/tmp"}

// defaultHost is libpq's default: the Unix socket if one is there, else
// localhost.
func defaultHost(port int) string {
	for _, d := range socketDirs {
		if _, err := os.Stat(filepath.Join(d, ".s.PGSQL."+strconv.Itoa(port))); err == nil {
			return d
		}
	}
	return "localhost"
}

// ConnectTimeout is the connect_timeout setting as a duration (0: none).
func (s Settings) ConnectTimeout() time.Duration {
	n, _ := strconv.Atoi(s.Params["connect_timeout"])
	return time.Duration(n) * time.Second
}

// Addr is where the settings point: host:port, or the socket path.
func (s Settings) Addr() string {
	if strings.HasPrefix(s.Host, "/") {
		return filepath.Join(s.Host, ".s.PGSQL."+strconv.Itoa(s.Port))
	}
	return net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
}

// DSN returns the settings as a postgres:// URL that lib/pq and pgx read
// alike; a socket directory (or any host a URL cannot carry) goes in the
// host query parameter.
func (s Settings) DSN() string {
	u := url.URL{Scheme: "postgres", Path: "/" + s.Database}
	q := url.Values{}
	for k, v := range s.Params {
		q.Set(k, v)
	}
	if !urlHost(s.Host) {
		// A socket directory, or a name a URL cannot carry as its host.
		q.Set("host", s.Host)
		q.Set("port", strconv.Itoa(s.Port))
	} else {
		u.Host = net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
	}
	switch {
	case s.Password != "":
		u.User = url.UserPassword(s.User, s.Password)
	case s.User != "":
		u.User = url.User(s.User)
	}
	// Encode writes a space as "+", which pgx does not read back as a space.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	return u.String()
}

// urlHost reports whether h can be the host part of a URL: an IP address or
// a name of letters, digits, '-', '_' and '.'.
func urlHost(h string) bool {
	if h == "" || net.ParseIP(h) != nil {
		return h != ""
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// String describes the target without the password, for messages.
func (s Settings) String() string {
	return fmt.Sprintf("%s (user %q, database %q; settings from %s)", s.Addr(), s.User, s.Database, s.From)
}

// Open opens a *sql.DB with driver ("pgx" or "postgres") and checks that the
// server answers within the connect timeout. The error names the address,
// user and database it tried.
func Open(ctx context.Context, driver string, s Settings) (*sql.DB, error) {
	db, err := sql.Open(driver, s.DSN())
	if err != nil {
		return nil, fmt.Errorf("pgconf: open %s: %w", s, err)
	}
	timeout := s.ConnectTimeout()
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		var ne net.Error
		if ctx.Err() == nil && (pctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout())) {
			return nil, fmt.Errorf("pgconf: cannot connect to PostgreSQL at %s: no answer within %v: %w", s, timeout, err)
		}
		return nil, fmt.Errorf("pgconf: cannot connect to PostgreSQL at %s: %w", s, err)
	}
	return db, nil
}
