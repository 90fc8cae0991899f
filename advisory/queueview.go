package advisory

import (
	"cmp"
	"slices"
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// QueuedKey is one key that goroutines of the process wait for in a
// Locker's in-process queue (see the package documentation), as Waiting
// saw it. It encodes to JSON as it is, for a debug endpoint.
type QueuedKey struct {
	Key keyspace.Key `json:"-"`
	// Name is the key as people read it: "namespace/n" for a pair key of a
	// namespace registered in this process, else the key's String.
	Name string `json:"key"`
	// Namespace is the name of the key's registered namespace, if any.
	Namespace string `json:"namespace,omitempty"`
	// Holders is the goroutines that have the key's place in the queue:
	// they hold its lease, or are taking it from the server. Exclusive
	// says whether that place is exclusive.
	Holders   int  `json:"holders"`
	Exclusive bool `json:"exclusive"`
	// Waiters is who waits behind them, in the order they will get the
	// key.
	Waiters []QueuedWaiter `json:"waiters"`
}

// QueuedWaiter is one goroutine waiting in the in-process queue.
type QueuedWaiter struct {
	Shared bool `json:"shared"`
	// Waited is how long it has waited so far (in JSON, nanoseconds).
	Waited time.Duration `json:"waited_ns"`
}

// Waiting returns the keys that goroutines of the process wait for in the
// Locker's in-process queue, the longest waiter first. What waits on the
// server (for keys other processes hold) is in pg_locks instead: see
// pglock ls. Waiting locks the queue's shards one after the other, each
// for as long as copying its waiters takes, so it is fine for a debug
// endpoint but not for a hot path; Stats counts the waiters for free. A nil
// Locker has nobody waiting.
func (l *Locker) Waiting() []QueuedKey {
	if l == nil {
		return nil
	}
	snap := l.q.Snapshot()
	out := make([]QueuedKey, 0, len(snap))
	for _, ks := range snap {
		q := QueuedKey{Key: ks.Key, Name: keyName(ks.Key), Holders: ks.Holders, Exclusive: ks.Exclusive,
			Waiters: make([]QueuedWaiter, len(ks.Waiters))}
		if ns, ok := namespaceOf(ks.Key); ok {
			q.Namespace = ns.Name()
		}
		for i, w := range ks.Waiters {
			q.Waiters[i] = QueuedWaiter{Shared: w.Shared, Waited: w.Waited}
		}
		out = append(out, q)
	}
	slices.SortFunc(out, func(a, b QueuedKey) int {
		return cmp.Or(cmp.Compare(b.Waiters[0].Waited, a.Waiters[0].Waited), keyspace.Compare(a.Key, b.Key))
	})
	return out
}
