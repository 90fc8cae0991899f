package keyqueue

import (
	"time"
)

// base is the origin of clock.
var base = time.Now()

// clock returns the monotonic time since base, in nanoseconds.
func clock() int64 { return int64(time.Since(base)) }

// Queued reports whether the ticket had to wait for its grant (it was not
// granted at once).
func (t *Ticket[K]) Queued() bool { return t.ready != nil }

// QueueWait returns how long the ticket waited for its grant: zero if it
// was granted at once. Call it only after Lock or LockShared returned the
// ticket.
func (t *Ticket[K]) QueueWait() time.Duration { return time.Duration(t.waited) }

// Waiters returns the number of tickets waiting, for any key. It reads one
// counter.
func (q *Queue[K]) Waiters() int { return int(q.waiters.Load()) }

// KeyState is what Snapshot saw of one key.
type KeyState[K comparable] struct {
	Key       K
	Holders   int      // tickets held
	Exclusive bool     // the holder holds exclusively
	Waiters   []Waiter // in the order they will be granted
}

// Waiter is one waiting ticket in a KeyState.
type Waiter struct {
	Shared bool
	Waited time.Duration // how long it has waited so far
}

// Snapshot returns the keys that have at least one waiting ticket, each
// with its holders and its waiters in queue order. Each shard is read under
// its own mutex, one after the other: the keys of different shards may be
// seen at slightly different moments. It allocates only for what it
// returns, and never blocks a shard for longer than copying its waiters.
func (q *Queue[K]) Snapshot() []KeyState[K] {
	var out []KeyState[K]
	for i := range q.shards {
		s := &q.shards[i]
		s.mu.Lock()
		now := clock()
		add := func(key K, e *entry[K]) {
			if e.head == nil {
				return
			}
			ks := KeyState[K]{Key: key, Holders: e.holders, Exclusive: e.exclusive,
				Waiters: make([]Waiter, 0, e.waiting.Load())}
			for t := e.head; t != nil; t = t.next {
				ks.Waiters = append(ks.Waiters, Waiter{Shared: t.shared, Waited: time.Duration(now - t.queued)})
			}
			out = append(out, ks)
		}
		for j := range s.slots {
			if sl := &s.slots[j]; sl.used {
				add(sl.key, &sl.e)
			}
		}
		for key, e := range s.more {
			add(key, e)
		}
		s.mu.Unlock()
	}
	return out
}
