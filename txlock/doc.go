// Package txlock takes PostgreSQL transaction-level advisory locks
// (pg_advisory_xact_lock and friends) on a transaction the caller already
// has: a *sql.Tx, a *sqlx.Tx, or anything with a QueryRowContext method that
// runs inside one transaction. The lock is released by the server at COMMIT
// or ROLLBACK and never earlier; there is no unlock.
//
// A transaction lock outside a transaction block would be released at the
// end of its own statement, so handing txlock a *sql.DB, *sqlx.DB or
// *sql.Conn is rejected with ErrNotTransaction before anything is sent.
//
// The shortest correct use is Do, which begins the transaction, takes the
// lock, runs the function and commits (or rolls back on an error or a panic):
//
//	err := txlock.Do(ctx, db, keyspace.Hash("invoice:42"), func(tx *sql.Tx) error {
//		_, err := tx.ExecContext(ctx, "UPDATE invoices SET paid = true WHERE id = 42")
//		return err
//	})
//
// Inside a transaction of your own:
//
//	if err := txlock.Lock(ctx, tx, key, txlock.WithLockTimeout(2*time.Second)); err != nil {
//		return err // errors.Is(err, txlock.ErrLockTimeout) when the wait ran out
//	}
//
// Several keys are taken with LockAll in one statement and always in the
// order of keyspace.Key.Less, so two transactions that lock the same keys
// listed in different orders never deadlock on each other.
//
// Keys reach the server as $n parameters, which every driver accepts, unless
// txlock knows the driver: WithDriver(db.Driver()), a transaction value with a
// Driver() driver.Driver method, a *sqlx.Tx (its DriverName), or the *sql.DB
// given to Do. Then the statement is written in the style that suits the
// driver: lib/pq gets integer literals in the text, which saves the extra
// prepare round trip it makes for every parameterised statement (about 0.1 ms
// instead of 0.3 ms per lock on loopback here), while pgx keeps parameters and
// its cache of prepared statements.
//
// LockAll and its variants take a variadic key list, so their options come
// first: LockAllTimeout(ctx, tx, d, keys...) or LockAllWith(ctx, tx, opts,
// keys...).
//
// Transaction locks need nothing but the transaction, so they work through a
// pooler in transaction mode (PgBouncer and the like), where the session locks
// of package advisory cannot.
//
// All functions are safe for concurrent use on different transactions; a
// single transaction is no more concurrent than database/sql makes it.
package txlock
