// Package middleware serialises work per resource with PostgreSQL advisory
// locks: net/http middleware for handlers (session locks through package
// advisory, or transaction locks through package txlock) and wrappers for
// periodic jobs and queue consumers.
//
// Every HTTP middleware here is a constructor returning
// func(http.Handler) http.Handler, so it composes with net/http's ServeMux,
// chi and the rest. A KeyFunc derives the lock key from the request: PathID
// (int32 ids, through a keyspace.Namespace) and PathInt64 (bigint ids)
// answer 400 for a path value that is not such an id, PathValue hashes names:
//
//	orders := keyspace.MustNamespace("orders", 1)
//	lock := middleware.Lock(locker, middleware.PathID(orders, "id"),
//		middleware.WaitUpTo(2*time.Second))
//	mux.Handle("PUT /orders/{id}", lock(updateOrder))
//
// # Answers
//
// A request that does not get its lock is answered by the middleware and never
// reaches the handler. The defaults (WithResponder replaces them) are a short
// plain-text body and:
//
//   - 400 Bad Request when the KeyFunc fails (ErrBadKey), before any round
//     trip;
//   - 409 Conflict with Retry-After when the key is held elsewhere in fail-fast
//     mode (ErrBusy; FailFast is the default);
//   - 503 Service Unavailable with Retry-After when the wait of WaitUpTo ran out
//     (ErrWaitTimeout), when the key is busy and MaxWaiters requests of this
//     middleware already wait for it (ErrTooManyWaiters; never in fail-fast
//     mode), or when the lock could not be
//     taken for any other reason, such as the database being down
//     (ErrUnavailable; the cause is logged and passed to the hooks, never
//     written to the client);
//   - 429 Too Many Requests with Retry-After, from Limit only, when the
//     request's name (its tenant) already has the most requests allowed
//     running across all processes (ErrLimited): the client's share is used
//     up, the service is not down, so not 503;
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
// A request under Lock pins at most one connection of the Locker's pool at a
// time: while it tries the key, while it waits for it on the server, and
// while it holds it. Requests that wait for a key that another request of
// the same Locker holds queue in memory and pin none, so a process has at
// most one waiter per busy key on the server. Size the pool (SetMaxOpenConns)
// for n resources worked on at once:
//
//   - 2n when the handlers write through Lease(ctx).Tx: the transaction runs
//     on the connection that holds the lock, needs no other, and fails with
//     advisory.ErrLockLost if the lock was lost (a write through the pool
//     would go through even then);
//   - (2+c)n when each handler also takes c connections of the same pool at
//     once (queries on the *sql.DB). A smaller pool can deadlock: the leases
//     take every connection, and the handlers that hold them wait for one
//     more. Or give the Locker a *sql.DB of its own.
//
// A smaller pool under Lease(ctx).Tx only makes requests wait for a
// connection before they try their key, a wait that WaitUpTo does not bound.
//
// Under TxLock every request pins one connection from BEGIN to COMMIT,
// holding or waiting (a waiter waits on the server, in its transaction), and
// the handler works on that transaction: size the pool to the requests the
// route serves at once, or beginning the transaction waits for a connection.
//
// # Concurrency limits
//
// Limit lets at most n requests of one name (a tenant, an API key) run at
// once across every process, on an advisory.Semaphore per name:
//
//	tenants := keyspace.MustNamespace("tenant-limit", 2)
//	limit := middleware.Limit(locker, tenants, byTenant, 5) // 429 beyond 5
//	mux.Handle("POST /exports", limit(export))
//
// # Workers
//
// Singleton wraps a periodic job so that of all the processes that run it at
// the same time only the one that wins the lock does; the others get
// ErrSkipped. For a process that should keep leading (a scheduler, a
// controller) and a successor that takes over when it dies, use
// advisory.Elector instead: Singleton is for one run per call. Keyed runs
// queue messages one per key at a time across all processes, different keys
// in parallel.
package middleware
