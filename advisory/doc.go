// Package advisory takes PostgreSQL session-level advisory locks from a
// *sql.DB and guarantees that a lock never leaks into the connection pool.
//
// A session lock belongs to one PostgreSQL backend, so every Lease pins its
// own *sql.Conn for as long as it is held: the acquire and the release run on
// that connection, and a connection whose state is in doubt (an acquire that
// was cancelled or failed ambiguously, a release that errored or reported
// false, a lease that was lost) is discarded instead of going back to the
// pool. Release runs under context.WithoutCancel, so a cancelled request
// context still releases, with its own short timeout where the driver can
// enforce one (pgx; lib/pq can only send a cancel request, which cannot cut
// an unlock short: see Lease.Release).
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
// While a lease is held a keepalive runs one tiny statement (SELECT
// pg_backend_pid()) on its connection every keepalive interval (WithKeepAlive,
// default 1 s), each bounded by its own timeout of at most 900 ms, waited for
// in a way that a driver call hanging on a silent network cannot delay. If the
// statement fails, times out, or answers from another backend than the one
// that took the lock (a pooler in transaction mode: ErrPooler), the lease is
// lost: Lost() is closed, Err() reports ErrLockLost with the cause, the
// functions registered with Lease.AfterLost start, the context of Do is
// cancelled with that cause, the Hooks.Lost hook runs, and the connection is
// discarded. The keepalives of a Locker share one timer, which fires every
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
// holding the key incompatibly fails at once, without a round trip. LockAll
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
//     server restarts and crashes, bumped in a counter table in the same
//     statement as the acquire (no extra round trip). Stores outside this
//     database take a write only with a token at least as high as the
//     highest they have seen. A token is epoch<<40 | counter and only its
//     order means something: the counter commits asynchronously (no WAL
//     flush per lock), and the epoch, bumped durably at the first token of
//     every server lifetime (restart, crash recovery, failover), puts every
//     token after a crash above the ones a crash may have lost. Create the
//     table once with CreateFenceTable (or FenceTableSQL in a migration);
//     without it acquisitions fail with ErrNoFenceTable. WithFencing has the
//     details: the layout, the bounds, shared holders.
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
// An exclusive or shared Lock sends one statement built by sqltext.Lock (wait
// mode, with lock_timeout folded in when WithLockTimeout is set); TryLock and
// TryLockShared send sqltext.Lock in try mode. That statement also returns
// the backend pid; with lib/pq and pgx, whose connections keep one backend
// for life, the pid is remembered per connection, and later single-key locks
// on the same connection send sqltext.LockExec instead, with Exec (the rows
// affected say whether a try took the key), which costs the driver and the
// server no result set; LockAll sends sqltext.LockAll
// for two or more keys (with WithFencing: sqltext.LockFenced and
// sqltext.LockAllFenced instead, which lib/pq sends as a session-level
// prepared statement, EXECUTE, with one PREPARE the first time a session
// needs it: their text costs more to plan than to run); Release sends
// sqltext.Unlock (one key) or sqltext.UnlockMany (several keys, one round
// trip) with Exec, on the same connection, and counts the rows affected.
// When Hooks.Contended is set, Lock and LockAll first try
// (try mode), report contention if refused, and then wait: one more round
// trip, but only under contention and only when that hook is asked for
// (fenced multi-key locks do not try first). A Release that hands its lock
// over sends sqltext.Ping on the lease's connection; a Lock that receives a
// handed-over lock and a try refused in memory send nothing.
//
// # Concurrency
//
// A Locker is safe for concurrent use. Every method of a Lease is safe for
// concurrent use; Release takes effect once and later calls return
// ErrReleased.
package advisory
