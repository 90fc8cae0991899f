// Command pglock uses PostgreSQL advisory locks from the command line: it
// shows which key a name maps to, runs a command only while holding a lock
// (flock(1) for PostgreSQL: a cron job runs on one host at a time), lists who
// holds and who waits for advisory locks, and demonstrates what the locks are
// for on a throwaway server.
//
//	pglock key  [--json] [--ns N] [--name] NAME|ID | --key K
//	pglock run  [--try | --wait D] [--shared] [--quiet] [--keepalive D] [--grace D] [--ns N] [--name] NAME|ID -- CMD [ARGS...]
//	pglock ls   [--json] [--all] [--sem NAME --ns N [--slots N]]
//	pglock demo [--workers N] [--increments N] [--pause D]
//	pglock fence init|migrate [--table T] [--print] | fence show [--table T] [NAME|ID]
//
// Every command answers --help; "pglock --version" prints the module version
// pglock was built from ("(devel)" when the build recorded none). An unknown
// command or flag prints the usage and exits with status 64 (EX_USAGE).
//
// # Keys
//
// One rule names a key: an ID, an argument written as a decimal integer
// (42, or -7 after "--"), is the key itself, keyspace.Int64(ID), so that
// "pglock run 42" contends with a program's keyspace.Int64(42); a NAME,
// anything else, is hashed with keyspace.Hash: the first 8 bytes of
// MD5(NAME), big-endian, signed, the same number as the SQL
// ('x' || substr(md5(NAME), 1, 16))::bit(64)::bigint, so pglock, Go programs
// using this module, Python and psql contend on the same lock. --name makes
// the argument a NAME even if it looks like a number: "--name 42" hashes the
// text "42" (--hash is an older spelling of --name). A number written with a
// "+" or leading zeros, or out of range, is refused rather than guessed at.
//
// With "--ns N" the key is a pair in namespace N: an ID (an int4) gives
// (N, ID) as keyspace.Namespace.ID does, a NAME gives (N, first 4 bytes of
// MD5(NAME)) as Namespace.Hash does. N is an int4, or a namespace name given
// with --names orders=1,jobs=2 or in the environment variable
// PGLOCK_NAMESPACES (same syntax); ls and key use those names to show pair
// keys as "orders/42". "--key K" names a key as written: "--key 42" is the
// bigint 42, "--key '(1,2)'" the pair (1,2).
//
// "pglock key" prints the key and how it shows in pg_locks; "pglock run"
// prints the same on standard error once it holds the lock (unless --quiet),
// and names it in every message; "pglock fence show" prints the key before
// its token.
//
// # pglock key
//
// Prints the key, how it was computed (with the SQL that computes the hash),
// the SQL that takes, tries, releases and transaction-locks it, and the
// (classid, objid, objsubid) it shows as in pg_locks with a query that finds
// it. It needs no server. --json prints the same as a JSON object.
//
// # pglock run
//
// Takes the session-level advisory lock (exclusive, or shared with --shared)
// through package advisory, runs CMD while holding it, and releases it when
// CMD ends. Without --try or --wait it waits as long as it takes; --try does
// not wait; --wait D waits at most D (--wait 0 is --try). CMD inherits
// pglock's standard streams and environment, plus PGLOCK_KEY set to the key.
// The session's application_name (unless the connection settings name one)
// is "pglock run" followed by the key as named on the command line, such as
// "pglock run --ns orders 42", so that pg_stat_activity and "pglock ls" show
// which lock a session is for.
//
// CMD runs in a process group of its own. SIGINT, SIGTERM, SIGHUP and SIGQUIT
// received by pglock are passed on to that group; a signal received while
// pglock is still connecting or waiting for the lock ends pglock with 128+N
// and CMD is not run. (In a terminal, Ctrl-C reaches pglock, which passes it
// on; a CMD that reads the terminal is in a background process group and is
// stopped by the terminal, so pglock suits unattended commands.)
//
// The held lock's connection is checked every --keepalive (default 2s). If the
// lock is lost (the backend was terminated, the connection broke or stopped
// answering, the server restarted), CMD's process group gets SIGTERM and,
// if CMD has not ended --grace later (default 5s), SIGKILL; pglock then exits
// with status 76. A loss is noticed within about the keepalive plus one
// second, so CMD ends within keepalive + 1s + grace of the loss.
//
// Exit statuses of pglock run:
//
//	0-125    CMD's own exit status
//	126      CMD could not be executed (not executable, permission denied)
//	127      CMD was not found
//	128+N    CMD was ended by signal N (as shells report it), or pglock got
//	         signal N before CMD started
//	64       bad command line (EX_USAGE); CMD was not run
//	69       could not connect, or the server failed while taking the lock
//	         (EX_UNAVAILABLE: try again later); CMD was not run
//	75       the lock was not acquired: held elsewhere with --try, or --wait
//	         ran out (EX_TEMPFAIL: try again later); CMD was not run
//	76       the lock was lost while CMD ran; CMD was terminated
//	78       the connection settings cannot work as they are (EX_CONFIG):
//	         a malformed connection string or PG* variable, a missing
//	         service, or a database or role the server does not know, or a
//	         password it rejects; CMD was not run, and trying again will not
//	         help until the settings change
//
// A CMD that itself exits with 64, 69, 75, 76 or 78 is indistinguishable from
// pglock's own statuses; pglock prints a line on standard error in its own
// cases.
//
// # pglock ls
//
// Lists the advisory locks of the database connected to (--all: of every
// database): key (decoded from pg_locks with keyspace.FromLock, with its
// namespace name when known), mode (exclusive or shared), held or waiting,
// pid, database, application_name, client address and session state, and
// three durations, each only where PostgreSQL knows it:
//
//	WAITED       how long a waiter has waited (pg_locks.waitstart, PostgreSQL 14+)
//	IN XACT      how long the session's current transaction has run
//	             (xact_start); a transaction-level lock is no older
//	SESSION AGE  how long the session has existed (backend_start); a pooled
//	             connection is older than the locks it holds
//
// PostgreSQL does not record when a lock was granted, so no column claims to
// say how long a lock has been held.
//
// With --sem NAME --ns N, ls shows only the slots of the semaphore NAME of
// package advisory (NewSemaphore with that namespace; --slots, default 16,
// is its number of slots), each row labelled "slot i" ("semaphore" and
// "slot" in --json), after a line that says how many of its slots are held
// and how many sessions wait on the server for one.
//
// Below the table, ls draws who blocks whom: trees built from
// pg_blocking_pids, each waiter under the session it waits behind, with the
// keys each session holds and waits for and how long it has waited. A waiter
// behind both a holder and another waiter queued ahead of it shows under the
// nearest one only, so a queue reads as a chain; a waiter behind several
// shared holders shows under each.
//
// --json prints {"locks": [...], "blocking": [...]}: every row with the raw
// timestamps of pg_stat_activity (backend_start, xact_start, state_change),
// pg_locks (wait_start) and the server's clock (now), the durations as whole
// milliseconds (waited_ms, xact_age_ms, session_age_ms; null when unknown or
// not applicable) and blocked_by (every pid pg_blocking_pids names); and the
// same tree, each node with pid, application_name, database, holds,
// waits_for, waited_ms, blocked_by and the nodes it blocks.
//
// # pglock demo
//
// With --dsn or DATABASE_URL set, it runs on that database; otherwise it
// starts a throwaway PostgreSQL through package itest (PGADVISORY_TEST_DSN if
// set; else the local PostgreSQL binaries, run as the postgres user when
// pglock runs as root; else Docker; PGADVISORY_TEST_MODE=docker or local
// picks one) and removes it at the end, also when interrupted (SIGINT,
// SIGTERM, SIGHUP). Several workers add 1 to one order's total by reading it,
// pausing, and writing it back: without a lock updates are lost; under
// txlock.Do and under an advisory session lock none are. It prints a table
// (mode, expected, final, lost, time) and the lock's pg_locks row while held,
// and exits 1 if no update was lost without a lock or any was lost with one.
//
// On a database of yours it cannot meet your application: its table is
// pglock_demo_ and 8 random hex digits (unlogged), and every key it takes is
// in its own namespace, pglock-demo (id -1984345403, the first 4 bytes of an
// MD5), with a random id. It drops the table when it ends, also on SIGINT,
// SIGTERM and SIGHUP; its locks end with its sessions. A demo killed outright
// (SIGKILL, a crash) cannot drop its table, so each demo holds a lock on its
// table's name while it runs, and the next demo drops every pglock_demo_
// table whose lock is free, saying so.
//
// # Connection settings
//
// As with libpq, because pgx's pgconn.ParseConfig resolves them as libpq
// does: the --dsn flag, else DATABASE_URL, is a connection string (postgres://
// URL or keyword=value); whatever it leaves out comes from the PG* variables
// (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE, PGAPPNAME,
// PGCONNECT_TIMEOUT, ...), a service (PGSERVICE or service=, from
// PGSERVICEFILE or ~/.pg_service.conf), the passfile (PGPASSFILE or
// ~/.pgpass), then libpq's defaults (the Unix socket if there, else
// localhost; port 5432; the operating system user). A connection attempt
// gives up after connect_timeout (default 10s) and says which address, user
// and database it tried, and where the settings came from. pglock connects
// through pgx's database/sql driver.
//
// # pglock fence
//
// "pglock fence init" creates the fencing table, its sequence and its epoch
// row, from which advisory.WithFencing and txlock.LockToken draw their
// tokens (pgadvisory_fence and pgadvisory_fence_seq, or --table T,
// optionally schema.table, and T_seq), if they do not exist; with --print it
// prints the SQL instead, for a migration, and needs no server. On a table
// of the per-key layout of earlier versions it fails, naming the fix, and
// prints the SQL that migrates it; "pglock fence migrate" runs that SQL
// (--print prints it): one transaction, after which every token is above
// the old table's. "pglock fence show" prints the latest token the table
// has handed out, 0 if none, after the key if one is named (as with
// "pglock key"): tokens of all keys come from one sequence, so the next
// token of every key is above it. Tokens are epoch<<40 | counter and draws
// commit asynchronously: after a server crash the next token is of a new
// epoch, above every token handed out before.
//
// "pglock run --fence NAME -- CMD" takes a fencing token with the lock and
// hands it to CMD in PGLOCK_TOKEN (--fence-table T for another table), so
// that a cron job can fence its writes to other stores.
//
// Exit statuses of key, ls, demo and fence: 0 success, 1 failure (a message
// on standard error), 64 bad command line (EX_USAGE), 78 connection
// settings that cannot work (EX_CONFIG, as for run).
package main
