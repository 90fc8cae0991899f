package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Exit statuses; see the package documentation.
const (
	exitOK          = 0
	exitError       = 1  // key, ls, demo: something failed
	exitUsage       = 64 // a command line that cannot be run (EX_USAGE)
	exitUnavailable = 69 // run: no connection or a database error before CMD started
	exitConfig      = 78 // connection settings that cannot work as they are (EX_CONFIG)
	exitNotAcquired = 75 // run: the lock is held elsewhere (--try) or --wait ran out
	exitLost        = 76 // run: the lock was lost while CMD ran; CMD was terminated
	exitCannotExec  = 126
	exitNotFound    = 127
)

const mainUsage = `pglock: PostgreSQL advisory locks from the command line.

Usage:
  pglock key  [--ns N] [--name] NAME|ID     the key, its SQL, how it shows in pg_locks
  pglock run  [--try | --wait D] [--shared] NAME|ID -- CMD [ARGS...]
                                            run CMD only while holding the lock (flock for PostgreSQL)
  pglock ls   [--json] [--all]              who holds and who waits for advisory locks
  pglock demo                               lost updates without locks, none with them
  pglock fence init [--table T] [--print]   create (or print) the fencing table and sequence
  pglock fence migrate [--table T] [--print]  migrate a fencing table of the per-key layout
  pglock fence show [--table T] [NAME|ID]   the latest fencing token handed out

An ID (a decimal integer such as 42) is the key itself; a NAME (anything else,
or any argument after --name) is hashed.

Run "pglock COMMAND --help" for a command's flags, "pglock --version" for the
version. Exit status: 64 for a bad command line, 78 for connection settings that
cannot work (a malformed connection string, no such service, database or role).
Connection settings follow libpq: --dsn, else DATABASE_URL, is the connection
string; what it leaves out comes from PGHOST, PGPORT, PGUSER, PGDATABASE,
PGSERVICE and the other PG* variables, the service file and the passfile.
`

const connUsage = `Connection flags:
  --dsn DSN        connection string, URL or keyword=value (default: DATABASE_URL);
                   what it leaves out comes from the PG* variables, the service file
                   and the passfile, as with libpq
`

const keyUsage = `Usage: pglock key [--json] [--ns N] [--name] NAME|ID
       pglock key [--json] --key K

Prints the advisory lock key, the SQL that takes and releases it, and how it
shows in pg_locks. Needs no server.

The rule: an ID, a decimal integer such as 42, is the key itself; a NAME,
anything else, is hashed. --name hashes the argument even if it is a number.
A number written with a "+" or leading zeros, or out of range, is refused.

  ID          the bigint key ID (keyspace.Int64); a negative one after "--": pglock key -- -7
  NAME        hashed to a bigint: the first 8 bytes of MD5(NAME), big-endian, signed (keyspace.Hash)
  --name      the argument is a NAME even if it looks like a number: "--name 42" hashes "42"
              (--hash is an older spelling)
  --ns N      a pair key in namespace N (an int4, or a name from --names): an ID is its second
              int4 (Namespace.ID), a NAME is hashed to it (first 4 bytes of MD5, Namespace.Hash)
  --key K     a key as written: a bigint "n" or a pair "(a,b)"
  --names L   namespaces by name, e.g. orders=1,jobs=2 (also PGLOCK_NAMESPACES)
  --json      print JSON
`

const runUsage = `Usage: pglock run [flags] [--ns N] [--name] NAME|ID -- CMD [ARGS...]
       pglock run [flags] --key K -- CMD [ARGS...]

Takes the session advisory lock, runs CMD while holding it, releases it when
CMD ends. Flags go before NAME|ID. The key is chosen as with "pglock key": an
ID (a decimal integer) is the key itself, a NAME is hashed, --name hashes a
number too. Once it holds the lock, pglock prints the key and how it shows in
pg_locks on standard error.

  --try            do not wait: exit 75 at once if the lock is held elsewhere
  --wait D         wait at most D (e.g. 30s) for the lock, then exit 75; --wait 0 is --try
                   (default: wait as long as it takes)
  --shared         take the lock in shared mode (pg_advisory_lock_shared)
  --quiet          do not print the key held (for cron, which mails any output)
  --keepalive D    how often the held lock's connection is checked (default 2s)
  --grace D        after the lock is lost, how long CMD has between SIGTERM and SIGKILL (default 5s)
  --names L        namespaces by name, e.g. orders=1,jobs=2 (also PGLOCK_NAMESPACES)
  --fence          take a fencing token with the lock and hand it to CMD in
                   PGLOCK_TOKEN (the table must exist: pglock fence init)
  --fence-table T  the fencing table for --fence (default pgadvisory_fence)

CMD runs in its own process group; SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to
pglock are passed on to it. CMD's environment has PGLOCK_KEY set to the key,
and with --fence PGLOCK_TOKEN to the fencing token: a decimal integer above
every token handed out before for the key, by pglock or by a program's
advisory.WithFencing or txlock.LockToken on the same table; have the stores CMD
writes to reject a token lower than the highest they have seen.
The session's application_name is "pglock run" and the key as named here.

Exit status: CMD's own (128+N if it died of signal N); 75 if the lock was not
acquired; 76 if the lock was lost while CMD ran (CMD is terminated); 69 if the
server could not be reached or failed while taking the lock (try again later);
78 if the connection settings cannot work (malformed, no such service, database
or role); 126/127 if CMD could not be started; 64 for a bad command line.
`

const lsUsage = `Usage: pglock ls [--json] [--all] [--names L] [--sem NAME --ns NS [--slots N]]

Lists who holds and who waits for advisory locks in the current database
(--all: every database), with decoded keys, modes, pids, application names and
client addresses, then draws who blocks whom (from pg_blocking_pids): each
waiter under the session it waits behind.

What is known of time, and shown as such: WAITED, how long a waiter has waited
(PostgreSQL 14 and later); IN XACT, how long the session's transaction has run
(a transaction lock is no older); SESSION AGE, how long the session has existed.
PostgreSQL does not record when a lock was granted.

  --json      print JSON: {"locks": [...], "blocking": [...]}, durations in whole
              milliseconds (waited_ms, xact_age_ms, session_age_ms; null when unknown)
  --all       every database, not only the one connected to
  --names L   namespaces by name, e.g. orders=1,jobs=2 (also PGLOCK_NAMESPACES), to name pair keys
  --sem NAME  only the slots of the semaphore NAME (advisory.NewSemaphore) in the namespace
              --ns (an int32 id, or a name from --names), each labelled with its slot number,
              and how many of its slots are held and awaited
  --slots N   how many slots the semaphore has (default 16; its n in advisory.NewSemaphore)
`

const demoUsage = `Usage: pglock demo [--workers N] [--increments N] [--pause D]

Starts a throwaway PostgreSQL (local binaries, else Docker; or uses --dsn or
DATABASE_URL when set; PGADVISORY_TEST_MODE=local or docker picks one), lets N
workers add to one order's total by read-modify-write, first without locks
(updates are lost), then under txlock and advisory locks (none are lost), prints
the results and how the lock shows in pg_locks, and removes everything it made.
On your database it uses a table pglock_demo_XXXXXXXX and keys in a namespace of
its own (pglock-demo), and drops the tables of earlier demos that were killed.

  --workers N      concurrent workers (default 8)
  --increments N   increments per worker (default 10)
  --pause D        pause between read and write (default 5ms), which makes the race certain
`

var usages = map[string]string{
	"key":  keyUsage,
	"run":  runUsage + "\n" + connUsage,
	"ls":   lsUsage + "\n" + connUsage,
	"demo": demoUsage + "\n" + connUsage,
}

// stdio are the streams a command writes to.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

func main() {
	os.Exit(mainExit(os.Args[1:], os.Getenv, stdio{os.Stdin, os.Stdout, os.Stderr}))
}

// mainExit runs one command line and returns the exit status.
func mainExit(args []string, env func(string) string, io stdio) int {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version" || args[0] == "version") {
		fmt.Fprintln(io.out, "pglock", version())
		return exitOK
	}
	if len(args) > 0 && args[0] == "fence" {
		return runFence(context.Background(), args[1:], env, io)
	}
	c, err := parseArgs(args, env)
	if err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(io.err, "pglock: %s\n\n%s", ue.msg, ue.usage)
			return exitUsage
		}
		fmt.Fprintf(io.err, "pglock: %v\n", err)
		return exitUsage
	}
	if c.help {
		fmt.Fprint(io.out, c.usage)
		return exitOK
	}
	for _, d := range c.names {
		if _, err := keyspace.NewNamespace(d.name, d.id); err != nil {
			fmt.Fprintf(io.err, "pglock: %v\n", err)
			return exitUsage
		}
	}
	ctx := context.Background()
	if c.name == "demo" || c.name == "ls" {
		// Ctrl-C ends them through their cleanup: the demo's server and
		// table are removed. (run handles signals itself.)
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		defer stop()
	}
	switch c.name {
	case "key":
		return report(io, runKey(c, io.out))
	case "ls":
		return report(io, runLs(ctx, c, env, io.out))
	case "demo":
		return report(io, runDemo(ctx, c, env, io.out, io.err))
	case "run":
		return runRun(ctx, c, env, io)
	}
	fmt.Fprintf(io.err, "pglock: unknown command %q\n", c.name)
	return exitUsage
}

// report prints err, if any, and returns the exit status for it:
// exitConfig for connection settings that cannot work, else exitError.
func report(io stdio, err error) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(io.err, "pglock: %v\n", trimPrefix(err))
	if isConfig(err) {
		return exitConfig
	}
	return exitError
}

// trimPrefix drops the package prefix of pglock's own internal packages from
// an error message, which reads better after "pglock: ".
func trimPrefix(err error) string {
	s := err.Error()
	for _, p := range []string{"pglock: ", "lockview: "} {
		s = strings.TrimPrefix(s, p)
	}
	return s
}
