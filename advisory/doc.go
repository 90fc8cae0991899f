// Package advisory takes PostgreSQL session-level advisory locks from a
// *sql.DB and guarantees that a lock never leaks into the connection pool.
//
// A session lock belongs to one PostgreSQL backend, so a Lease lives on a
// session: a connection pinned from the pool, whose acquires, releases and
// keepalive all run on it, and which goes back to the pool only when it
// certainly holds nothing (a connection whose state is in doubt, after an
// acquire that was cancelled or failed ambiguously, a release that errored,
// a loss, is discarded). Release runs under context.WithoutCancel, so a
// cancelled request context still releases, with its own short timeout.
//
// # Sessions: multiplexed and dedicated
//
// By default a Locker multiplexes: the single-key leases of many goroutines
// share a few sessions (WithSessions; 4, or a quarter of SetMaxOpenConns),
// and the tries and releases that goroutines ask for at the same time on one
// session go to the server as one statement (sqltext.Batch: one round trip
// for all of them). A Lock that finds its key held by another process does
// not wait on a shared session: it waits on a dedicated session of its own,
// one of a bounded set (WithWaiting), which then carries that lease; LockAll
// always takes one. So a process holds any number of locks on a handful of
// connections, and a handler that holds a lock and needs a connection of the
// same pool finds one. The leases of one multiplexed session share its
// backend (Lease.PID), its keepalive and its fate: a lost session loses
// exactly its leases. Two incompatible leases of one key are never on one
// session (PostgreSQL would grant the same key twice to one session): the
// goroutines of a process that want one key queue in memory first (see
// below). A Lease.Tx on a multiplexed lease holds the session's connection
// while it runs: the other leases' tries and releases on that session wait
// for it, so keep such transactions short, or use WithDedicatedSessions.
//
// WithDedicatedSessions gives every lease a session of its own (a
// connection per lease, from acquire to release), as drivers other than
// lib/pq and pgx get.
//
// # Dead peers
//
// A backend learns that its client vanished (a partition, a frozen host)
// only through TCP: with the server's defaults it keeps that client's locks
// for about two hours. Every connection a Locker uses gets, once, session
// settings with which the server ends such a session, and frees its locks,
// within WithDeadPeerTimeout (default ten keepalive intervals, at least
// MinDeadPeerTimeout: 10 s), and with which a backend that waits for a lock
// for a vanished client stops waiting instead of being granted the lock.
// The holder itself learns of the loss sooner, from its keepalive. The
// settings stay on the pooled connection; they end only connections whose
// peer is gone.
//
// The shortest correct use:
//
//	l := advisory.New(db)
//	lease, err := l.Lock(ctx, keyspace.Hash("daily-report-job"))
//	if err != nil {
//		return err
//	}
//	defer lease.Release(ctx)
//
// or, with a context that is cancelled if the lock is lost:
//
//	err := l.Do(ctx, key, func(ctx context.Context) error { ... })
//
// # Loss detection
//
// While leases are held on a session a keepalive runs one tiny statement
// (SELECT pg_backend_pid()) on it every keepalive interval (WithKeepAlive,
// default 1 s), each bounded by its own timeout of at most 900 ms, waited for
// in a way that a driver call hanging on a silent network cannot delay. If the
// statement fails, times out, or answers from another backend than the one
// that took the lock (a pooler in transaction mode: ErrPooler), the session's
// leases are lost: for each, Lost() is closed, Err() reports ErrLockLost with the cause, the
// functions registered with Lease.AfterLost start, the context of Do is
// cancelled with that cause, the Hooks.Lost hook runs; and the connection
// is discarded. The keepalives of a Locker share one timer, which fires every
// quarter interval while leases are held and starts the pings that are due,
// each on a goroutine that ends with it: a held lease costs no goroutine and
// no timer between pings, and a lease is pinged between one and one and a
// quarter intervals after its grant or its last ping. The loss is signalled
// within the keepalive interval plus about one second of the event; another
// client may get the lock
// as soon as the server ends the session, so protect writes to this database
// with a transaction on the holding connection and writes elsewhere with your
// own fencing.
//
// # Many goroutines, one key
//
// The goroutines of one process that Lock or LockShared the same key through
// one Locker first queue in memory, first come first served (shared
// requests together, never ahead of an earlier exclusive one): only the head
// of that queue goes to the server, so a hot key pins one connection for the
// holder and at most one more for the next waiter instead of one per waiting
// goroutine, and waiting costs no goroutine and no connection. The wait in
// the queue ends with the context, and counts against WithLockTimeout. A
// TryLock or TryLockShared that finds another lease of the same Locker
// holding the key incompatibly fails at once, without a round trip. Two
// goroutines that each hold one key and Lock the other's wait in memory
// until their contexts end (PostgreSQL would see two sessions and answer one
// with a deadlock error, 40P01): bound such Locks with a context or
// WithLockTimeout, or take both keys with one LockAll. LockAll
// does not queue in memory: it waits on the server like a separate process.
// Two Lockers over the same or different pools queue separately and meet
// only on the server.
//
// When an exclusive holder releases while another goroutine of the process
// is queued for the key in exclusive mode, Release hands the server lock,
// with its connection, straight to it: one round trip that checks that the
// session still answers as the backend that took the lock (so that the
// release is verified and the next holder gets a lock that is held),
// instead of an unlock and a lock, and the key is never free in between. Processes waiting on the server
// get no turn during such a run, so it is bounded (WithHandoff, default 8
// handoffs or 20 ms after the server's grant, whichever comes first; then a
// real unlock lets the server choose the next holder). Fenced Lockers never
// hand off, since every holder needs a token of its own. The receiving lease
// is new (its own Lost, Err and keepalive); the one released is done.
//
// # Fencing
//
// A lock alone cannot stop a holder that paused (GC, a partition) and wakes
// up after its lock was lost and taken by someone else. Two fences:
//
//   - Lease.Tx runs a transaction on the very connection that holds the
//     lock: if the session is gone, so is the lock, and the transaction fails
//     with ErrLockLost; a commit that succeeded happened while the lock was
//     held. The keepalive never sends a statement inside such a transaction.
//   - WithFencing makes every acquisition return a token (Lease.Token,
//     Lease.Tokens), strictly increasing per key across holders, processes,
//     server restarts and crashes, drawn from one sequence (nextval) in the
//     same statement as the acquire (no extra round trip, no row written).
//     Stores outside this database take a write only with a token at least
//     as high as the highest they have seen. A token is epoch<<40 | counter
//     and only its order means something: the draws commit asynchronously
//     (no WAL flush per lock), and the epoch, bumped durably at the first
//     token of every server lifetime (restart, crash recovery, failover) and
//     when the counter would overflow, puts every token after a crash above
//     the ones a crash may have lost. A backend session reads the epoch once
//     and keeps it in a session setting. Create the table and its sequence
//     once with CreateFenceTable (or FenceTableSQL in a migration); without
//     them acquisitions fail with ErrNoFenceTable, and a table of the
//     per-key layout of earlier versions with ErrFenceOldLayout
//     (MigrateFenceTable, FenceMigrateSQL). WithFencing has the details: the
//     layout, the bounds, shared holders.
//
// # Coordination
//
// Two types build on leases: an Elector keeps campaigning for one key and
// runs OnElected(ctx, term) while it leads (the term is a fencing token;
// CurrentLeader and WatchLeader tell any process who leads, from pg_locks
// and the leader's application_name); a Semaphore lets at most n holders of
// a name, across all processes, hold one of its n slot keys at once.
//
// # Poolers
//
// Session locks cannot work through a pooler in transaction mode (PgBouncer
// pool_mode=transaction): consecutive statements may run on different
// backends, and a backend keeps its locks when it serves other clients. A
// lease is refused with ErrPooler when the acquire lands on a backend that
// another live lease of the same Locker holds, and reported lost with
// ErrPooler when the keepalive sees the backend change. Neither check can see
// every sharing, so use package txlock (transaction locks) through such a
// pooler.
//
// # SQL sent
//
// The statements come from package internal/sqltext (mocktest expects the
// same text). A connection new to the Locker first gets the dead-peer
// settings with sqltext.DeadPeer, which also names its backend. On a
// multiplexed session, tries and releases go as sqltext.Batch (arrays of
// keys and operations in, one row out; lib/pq runs it as a statement
// prepared once per session), with WithFencing as sqltext.BatchFenced,
// which also draws the tokens of the granted tries (a lone fenced try goes
// as sqltext.LockFenced). On a dedicated session a lock first
// tries (sqltext.LockExec, with Exec: the rows affected say whether it took
// the key, or sqltext.Lock, which also returns the backend pid, on a
// connection whose backend is not known yet), and only if refused waits
// (sqltext.Lock in wait mode, with lock_timeout folded in when
// WithLockTimeout is set); LockAll sends sqltext.LockAll for two or more
// keys (with WithFencing: sqltext.LockFenced and sqltext.LockAllFenced,
// which lib/pq sends as a session-level prepared statement, and whose draw a
// session that does not know the epoch yet resolves once with
// internal/fencing); Release sends
// sqltext.Unlock (one key) or sqltext.UnlockMany (several keys, one round
// trip) with Exec and counts the rows affected. The keepalive and a Release
// that hands its lock over send sqltext.Ping; a Lock that receives a
// handed-over lock and a try refused in memory send nothing.
//
// # Observability
//
// Hooks (WithHooks) report each event on the goroutine that caused it:
// Acquire once per acquire call whatever its outcome (acquired, busy,
// timeout, cancelled, failed), with its mode, its wait, the part of it
// spent in the process's queue and whether the lock was handed over;
// Queued when a goroutine starts to wait in that queue; Acquired, Released
// (with the hold time) and Lost (with the cause). A nil hook costs
// nothing; Acquire costs two clock reads per call and, unlike Contended,
// changes nothing that is sent. The module
// github.com/pgadvisory/pgadvisory/otel turns them into OpenTelemetry
// metrics and spans.
//
// Locker.Stats counts, at any moment, the leases held, the goroutines
// waiting in the process's queue and on the server, and the sessions open
// by kind (atomic counters, kept whether or not anyone reads them), for
// gauges. Locker.Waiting lists what waits in the process's queue, key by
// key, longest waiter first, and encodes to JSON for a debug endpoint; what
// waits on the server, and behind whom, is in pg_locks (pglock ls draws it
// as a tree). A Lease and a Locker implement slog.LogValuer: a lease logs
// its key by name ("orders/42" for a pair key of a namespace registered in
// this process), mode, backend pid and state; the Locker's own records
// (WithLogger) name keys the same way.
//
// # Concurrency
//
// A Locker is safe for concurrent use. Every method of a Lease is safe for
// concurrent use; Release takes effect once and later calls return
// ErrReleased.
package advisory
