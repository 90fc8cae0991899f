package benchsuite

import (
	"context"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/keyqueue"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// queuedLocker is a prototype of what advisory.Locker.Lock does once it uses
// internal/keyqueue: goroutines of the process that want the same key queue
// in memory, and only the head goes to the server, so a hot key costs one
// connection for the holder and at most one for the waiter at the head
// instead of one per waiting goroutine.
//
// With handoffs > 0, a holder that finds another goroutine of the process
// queued behind it passes its lease (the pinned connection that holds the
// lock on the server) straight to it instead of unlocking and letting it
// lock again: no round trip at all per handover. After handoffs consecutive
// handovers the lock is released on the server, so that other processes
// queued there get their turn (bounded unfairness, like sync.Mutex's
// starvation mode).
type queuedLocker struct {
	l        *advisory.Locker
	q        keyqueue.Queue[keyspace.Key]
	handoffs int

	// Gauges for the benchmark (nil: not counted): connections pinned by
	// leases, and goroutines waiting on the server.
	conns, waiting *maxGauge
}

// queuedLease is a held lock of a queuedLocker.
type queuedLease struct {
	ql     *queuedLocker
	t      *keyqueue.Ticket[keyspace.Key]
	lease  *advisory.Lease
	passes int // handovers so far in this run of the lock on the server
}

// parcel is what a handover carries.
type parcel struct {
	lease  *advisory.Lease
	passes int
}

// Lock waits in the process's queue for key, then takes it on the server
// unless the previous holder handed its lease over.
func (ql *queuedLocker) Lock(ctx context.Context, key keyspace.Key) (*queuedLease, error) {
	t, err := ql.q.Lock(ctx, key)
	if err != nil {
		return nil, err
	}
	if p, ok := t.Value().(parcel); ok {
		return &queuedLease{ql: ql, t: t, lease: p.lease, passes: p.passes}, nil
	}
	ql.conns.inc()
	ql.waiting.inc()
	lease, err := ql.l.Lock(ctx, key)
	ql.waiting.dec()
	if err != nil {
		ql.conns.dec()
		t.Release()
		return nil, err
	}
	return &queuedLease{ql: ql, t: t, lease: lease}, nil
}

// Release hands the lease over to the next goroutine of the process if the
// budget allows and one is queued; otherwise it unlocks on the server and
// then lets the next goroutine go to the server.
func (x *queuedLease) Release(ctx context.Context) error {
	if x.passes < x.ql.handoffs && x.lease.Err() == nil && x.t.Handoff(parcel{x.lease, x.passes + 1}) {
		return nil
	}
	err := x.lease.Release(ctx)
	x.ql.conns.dec()
	x.t.Release()
	return err
}
