package advisory

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Outcome is how an acquire ended, for Hooks.Acquire.
type Outcome uint8

// The outcomes of an acquire.
const (
	// Acquired: the lease was granted.
	Acquired Outcome = iota
	// Busy: a TryLock or TryLockShared found the key held (the error wraps
	// ErrNotAcquired).
	Busy
	// Timeout: the wait ran out of WithLockTimeout (the error wraps
	// ErrLockTimeout).
	Timeout
	// Cancelled: the caller's context ended (cancelled, or its deadline
	// passed) before the grant.
	Cancelled
	// Failed: any other error (the server, the connection, the pool, a
	// pooler).
	Failed
)

// String returns the outcome's name in lower case: "acquired", "busy",
// "timeout", "cancelled" or "failed".
func (o Outcome) String() string {
	switch o {
	case Acquired:
		return "acquired"
	case Busy:
		return "busy"
	case Timeout:
		return "timeout"
	case Cancelled:
		return "cancelled"
	}
	return "failed"
}

// AcquireEvent describes one call of Lock, TryLock, LockShared,
// TryLockShared or LockAll (and of the acquire of Do) when it returns, for
// Hooks.Acquire.
type AcquireEvent struct {
	// Key is the key; for LockAll, the first in sorted order.
	Key keyspace.Key
	// Keys is how many keys the call took: 1, or more for LockAll.
	Keys int
	// Shared and Try are the call's mode.
	Shared, Try bool
	// Outcome is how the call ended; Err is its error (nil when Acquired).
	Outcome Outcome
	Err     error
	// Wait is the time from the call to its outcome, connection checkout
	// included.
	Wait time.Duration
	// Queued reports that the call waited in the process's own queue for
	// the key behind other leases of this Locker (see the package
	// documentation); QueueWait is the part of Wait spent there, the rest
	// went to the server (and the pool).
	Queued    bool
	QueueWait time.Duration
	// HandedOver reports that the previous holder in this process handed
	// its held lock over (WithHandoff): no round trip to the server.
	HandedOver bool
}

// Namespace returns the namespace registered in this process that the
// event's key belongs to (keyspace.LookupNamespace of a pair key's first
// value); false for a bigint key, or a pair whose namespace is not
// registered here. It takes a mutex of package keyspace.
func (e AcquireEvent) Namespace() (keyspace.Namespace, bool) {
	return namespaceOf(e.Key)
}

// namespaceOf returns the registered namespace of key, if any.
func namespaceOf(key keyspace.Key) (keyspace.Namespace, bool) {
	a, _, ok := key.Pair()
	if !ok {
		return keyspace.Namespace{}, false
	}
	return keyspace.LookupNamespace(a)
}

// outcomeOf classifies the error of an acquire made under ctx.
func outcomeOf(ctx context.Context, err error) Outcome {
	switch {
	case err == nil:
		return Acquired
	case errors.Is(err, ErrNotAcquired):
		return Busy
	case errors.Is(err, ErrLockTimeout):
		return Timeout
	case ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return Cancelled
	}
	return Failed
}

// Stats is a moment of a Locker's activity, read from counters that the
// Locker keeps whether or not anyone reads them (atomic adds; no mutex).
// Fields that change together are read one after the other, so they may
// disagree for a moment.
type Stats struct {
	// Held is the leases held now: granted, and neither released nor lost.
	Held int `json:"held"`
	// Queued is the goroutines waiting in the process's queue behind other
	// leases of this Locker (Waiting lists them by key).
	Queued int `json:"queued"`
	// WaitingOnServer is the acquires that wait on the server for keys held
	// by other sessions, each on a connection of its own.
	WaitingOnServer int `json:"waiting_on_server"`
	// Multiplexed and Dedicated are the sessions open, by kind: each pins
	// one connection of the pool.
	Multiplexed int `json:"multiplexed_sessions"`
	Dedicated   int `json:"dedicated_sessions"`
	// Batches is how many statements the multiplexed sessions have sent
	// for tries and releases since New, and BatchedOps how many tries and
	// releases those carried: BatchedOps / Batches is the mean batch size
	// (1 while goroutines rarely meet on a session).
	Batches    int64 `json:"batches"`
	BatchedOps int64 `json:"batched_operations"`
}

// observer holds a Locker's counters for Stats.
type observer struct {
	held        atomic.Int64
	serverWait  atomic.Int64
	multiplexed atomic.Int64
	dedicated   atomic.Int64
	batches     atomic.Int64
	batchedOps  atomic.Int64
}

// sessions returns the counter of open sessions of the kind.
func (o *observer) sessions(mux bool) *atomic.Int64 {
	if mux {
		return &o.multiplexed
	}
	return &o.dedicated
}

// Stats returns what the Locker holds, who waits, and the sessions it has
// open. It is cheap (a few atomic loads) and safe to call at any time,
// e.g. from a metrics callback; a nil Locker has zero Stats.
func (l *Locker) Stats() Stats {
	if l == nil {
		return Stats{}
	}
	o := &l.obs
	return Stats{
		Held:            nonNegative(o.held.Load()),
		Queued:          l.q.Waiters(),
		WaitingOnServer: nonNegative(o.serverWait.Load()),
		Multiplexed:     nonNegative(o.multiplexed.Load()),
		Dedicated:       nonNegative(o.dedicated.Load()),
		Batches:         o.batches.Load(),
		BatchedOps:      o.batchedOps.Load(),
	}
}

// nonNegative hides the moment between a lease's loss and the counting of
// its grant (the loss of a handed-over lease may come first).
func nonNegative(n int64) int { return int(max(n, 0)) }

// acquireObs carries what an acquire learnt about its wait in the
// process's queue to Hooks.Acquire.
type acquireObs struct {
	failedInQueue bool
}

// queueFailed records that the acquire failed while it waited in the
// process's queue; ob may be nil.
func (ob *acquireObs) queueFailed() {
	if ob != nil {
		ob.failedInQueue = true
	}
}

// lockQueued takes one key: Locker.lockObserved, reported to Hooks.Acquire
// if that is set.
func (l *Locker) lockQueued(ctx context.Context, key keyspace.Key, shared, try bool) (*Lease, error) {
	if l == nil || l.opts.hooks.Acquire == nil {
		return l.lockObserved(ctx, key, shared, try, nil)
	}
	var ob acquireObs
	start := mono()
	ls, err := l.lockObserved(ctx, key, shared, try, &ob)
	e := AcquireEvent{Key: key, Keys: 1, Shared: shared, Try: try, Err: err,
		Outcome: outcomeOf(ctx, err), Wait: time.Duration(mono() - start)}
	switch {
	case ls != nil && ls.ticket != nil:
		e.Queued, e.QueueWait = ls.ticket.Queued(), ls.ticket.QueueWait()
		e.HandedOver = ls.passes > 0
	case ob.failedInQueue:
		e.Queued, e.QueueWait = true, e.Wait
	}
	l.opts.hooks.Acquire(ctx, e)
	return ls, err
}

// acquireAll is LockAll's acquire of keys (sorted, distinct), reported to
// Hooks.Acquire if that is set.
func (l *Locker) acquireAll(ctx context.Context, keys []keyspace.Key) (*Lease, error) {
	if l == nil || l.opts.hooks.Acquire == nil {
		return l.acquire(ctx, keys, false, false, l.lockTimeout())
	}
	start := mono()
	ls, err := l.acquire(ctx, keys, false, false, l.opts.lockTimeout)
	l.opts.hooks.Acquire(ctx, AcquireEvent{Key: keys[0], Keys: len(keys), Err: err,
		Outcome: outcomeOf(ctx, err), Wait: time.Duration(mono() - start)})
	return ls, err
}

// lockTimeout is WithLockTimeout's bound; zero for a nil Locker.
func (l *Locker) lockTimeout() time.Duration {
	if l == nil {
		return 0
	}
	return l.opts.lockTimeout
}
