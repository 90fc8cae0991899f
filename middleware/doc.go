// Package middleware serialises work per resource with PostgreSQL advisory
// locks: net/http middleware for handlers (session locks through package
// advisory, or transaction locks through package txlock) and wrappers for
// periodic jobs and queue consumers.
//
// Every HTTP middleware here is a constructor returning
// func(http.Handler) http.Handler, so it composes with net/http's ServeMux,
// chi and the rest. A KeyFunc derives the lock key from the request; PathValue
// builds one from a ServeMux path value through a keyspace.Namespace:
//
//	orders := keyspace.MustNamespace("orders", 1)
//	lock := middleware.Lock(locker, middleware.PathValue(orders, "id"),
//		middleware.WaitUpTo(2*time.Second))
//	mux.Handle("PUT /orders/{id}", lock(updateOrder))
//
// # Answers
//
// A request that does not get its lock is answered by the middleware and never
// reaches the handler. The defaults (WithResponder replaces them) are a short
// plain-text body and:
//
//   - 400 Bad Request when the KeyFunc fails (ErrBadKey);
//   - 409 Conflict with Retry-After when the key is held elsewhere in fail-fast
//     mode (ErrBusy; FailFast is the default);
//   - 503 Service Unavailable with Retry-After when the wait of WaitUpTo ran out
//     (ErrWaitTimeout), when more than MaxWaiters requests of this middleware
//     are already acquiring (ErrTooManyWaiters), or when the lock could not be
//     taken for any other reason, such as the database being down
//     (ErrUnavailable; the cause is logged and passed to the hooks, never
//     written to the client);
//   - 500 Internal Server Error, from TxLock only, when the transaction of a
//     handler that succeeded could not commit (ErrCommitFailed).
//
// Retry-After is one second unless RetryAfter says otherwise.
//
// 409 rather than 423 Locked because every client and proxy knows 409; 503
// rather than 504 for a wait that ran out because no upstream timed out: the
// service chose not to wait longer, and says when to try again.
//
// The handler finds what the middleware holds in the request context: the
// lease of Lock (Lease) or the transaction of TxLock (Tx).
//
// # Connections
//
// A session lock pins one connection of the Locker's pool while the request
// waits and while it holds the lock. If the handler needs connections of the
// same pool, waiters can take them all and the holder then waits forever for
// one of its own: keep MaxWaiters below the pool's MaxOpenConns minus what the
// holders' handlers need, or give the Locker its own *sql.DB. TxLock does not
// have this problem (the handler works on the transaction that holds the
// lock), but every waiter still holds a connection.
//
// # Workers
//
// Singleton wraps a periodic job so that of all the processes that run it at
// the same time only the one that wins the lock does; the others get
// ErrSkipped. Keyed runs queue messages one per key at a time across all
// processes, different keys in parallel.
package middleware
