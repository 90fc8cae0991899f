// Package pgadvisory turns the PostgreSQL an application already has into its
// lock service: advisory locks for database/sql, with namespaced keys, session
// locks pinned to one connection and never leaked back to the pool, transaction
// locks on the caller's own *sql.Tx, HTTP and worker middleware that serialise
// work per resource, and test kits for unit and integration tests.
//
// The module is a set of small packages; this one holds only documentation.
//
//   - keyspace: keys. Int64, Pair, Hash (MD5-based, the same number in Go,
//     Python and SQL), Namespace, and decoding what pg_locks shows.
//   - advisory: session locks. A Locker over a *sql.DB hands out a Lease that
//     owns one pinned connection for as long as the lock is held, notices when
//     the lock is lost, and fences writes made after a loss.
//   - txlock: transaction locks (pg_advisory_xact_lock) on an existing *sql.Tx
//     or *sqlx.Tx, released by COMMIT or ROLLBACK.
//   - middleware: net/http middleware that serialises requests per resource,
//     and worker wrappers for singleton jobs and keyed queue consumers.
//   - mocktest: go-sqlmock expectations for exactly the SQL this module sends.
//   - itest: a real PostgreSQL for integration tests, in one line.
//
// Which scope to use:
//
//	scope              released by                   holds a connection   use for
//	session (advisory) Release, or session end       yes, pinned          long work, work outside one transaction
//	transaction (txlock) COMMIT / ROLLBACK           the tx's own         work inside one transaction
//
// The command pglock (cmd/pglock) shows keys, lists who holds and waits, runs a
// command under a lock (flock(1) for PostgreSQL) and demonstrates the point of
// the library on a throwaway server.
package pgadvisory
