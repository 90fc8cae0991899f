// Package oteladvisory turns the hooks of package advisory into
// OpenTelemetry metrics and spans. It lives in a module of its own
// (github.com/pgadvisory/pgadvisory/otel), so that the core module does not
// require OpenTelemetry.
//
//	inst, err := oteladvisory.New() // the global MeterProvider and TracerProvider
//	if err != nil {
//		return err
//	}
//	l := advisory.New(db, advisory.WithHooks(inst.Hooks()))
//	defer inst.Observe(l)() // the gauges read l.Stats
//
// # Metrics
//
// Histograms, in seconds:
//
//   - pgadvisory.acquire.duration: every acquire call (Lock, TryLock,
//     LockShared, TryLockShared, LockAll, Do) from the call to its outcome,
//     by pgadvisory.outcome (acquired, busy, timeout, cancelled, failed),
//     pgadvisory.mode (exclusive, shared), pgadvisory.try, pgadvisory.queued
//     (whether it waited in the process's queue behind other leases of its
//     Locker) and pgadvisory.namespace;
//   - pgadvisory.acquire.queue.duration: of the acquires that queued in the
//     process, the part of the wait spent there (the rest went to the pool
//     and the server), by outcome, mode and namespace;
//   - pgadvisory.lease.duration: how long each lease was held, by mode and
//     namespace.
//
// Counters: pgadvisory.lease.losses (leases lost, by pgadvisory.cause:
// pooler, keepalive_timeout, server_shutdown, connection, other; and
// namespace) and pgadvisory.handoffs (locks handed over to the next
// goroutine of the process without a round trip, by namespace).
//
// Gauges, from the Stats of the Lockers given to Observe (summed):
// pgadvisory.leases (held), pgadvisory.waiters (by pgadvisory.wait: queue,
// server) and pgadvisory.sessions (by pgadvisory.session: multiplexed,
// dedicated; each pins one connection of the pool). From the same Stats,
// two counters: pgadvisory.batches (statements the multiplexed sessions
// sent for tries and releases) and pgadvisory.batch.operations (the tries
// and releases they carried; the ratio of the two is the mean batch size).
// A Locker whose observation stops keeps its counts in them.
//
// Every label set is bounded: the namespace attribute is the name of a
// namespace registered in the process (keyspace.NewNamespace), and is left
// out for other keys; the key itself is never a metric attribute.
//
// # Spans
//
// One span per acquire call, named "pgadvisory.acquire", child of the span
// in the call's context, from the call to its outcome, with the mode, try,
// outcome, queued, handed-over and namespace attributes, the number of
// keys, and an error status for the outcome failed (busy, timeout and
// cancelled are answers, not errors). The span is recorded when the call
// returns (it starts at the call's time): the statements that the acquire
// sends are not its children. WithKeyAttribute adds the key to it.
//
// # Cost
//
// With a MeterProvider of the SDK, the hooks record without allocating:
// the attribute sets are made once per combination and kept. A span
// allocates what the TracerProvider's spans allocate (with the SDK's, the
// span, its context and its copy of the attributes) and three small
// allocations of the adapter's: its two timestamps and its options. The
// span attributes of an acquire of one key that did not queue are made
// once per combination too (about 17 KB per namespace, made only with
// spans); other acquires, and those with WithKeyAttribute, build theirs.
// WithoutSpans leaves spans out.
package oteladvisory
