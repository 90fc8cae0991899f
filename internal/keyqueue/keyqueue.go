// Package keyqueue queues the goroutines of one process per key, first come
// first served, in exclusive or shared mode, so that of all the goroutines
// that want the same advisory lock only the one at the head goes to the
// server (and pins a pooled connection) while the rest wait in memory.
//
// A Queue is a reader/writer lock per key with strict FIFO order: a request
// is granted when it is compatible with the holders (shared with shared) and
// nobody is queued before it, so a stream of shared requests cannot starve an
// exclusive one. Waiting costs no goroutine: the caller's own goroutine
// blocks on a channel. A key's bookkeeping is removed as soon as its last
// holder and waiter leave, so a Queue's size follows the keys in use, not
// every key ever seen.
package keyqueue

import (
	"context"
	"sync"
)

// Queue is a set of per-key FIFO queues. The zero Queue is ready to use. A
// Queue is safe for concurrent use and must not be copied after first use.
type Queue[K comparable] struct {
	mu   sync.Mutex
	keys map[K]*entry[K]
	free []*entry[K] // entries of idle keys, for reuse (at most maxFree)
}

// maxFree bounds the entries a Queue keeps for reuse: a key taken and given
// back, the common case, then costs no allocation for its entry.
const maxFree = 32

// entry is the state of one key in use.
type entry[K comparable] struct {
	holders    int  // tickets granted and not yet released
	exclusive  bool // the holders hold exclusively (then holders == 1)
	head, tail *Ticket[K]
	waiting    int // tickets between head and tail
}

// Ticket states.
const (
	waiting uint8 = iota
	held
	done
)

// Ticket is one granted place in a key's queue. Release it exactly once.
// Its methods are safe for concurrent use with the Queue's.
type Ticket[K comparable] struct {
	q      *Queue[K]
	e      *entry[K]
	key    K
	shared bool
	state  uint8         // guarded by q.mu
	ready  chan struct{} // closed when a waiting ticket is granted; nil if granted at once
	value  any           // what Handoff passed along with the grant

	prev, next *Ticket[K] // neighbours in the wait list, guarded by q.mu
}

// Key returns the ticket's key.
func (t *Ticket[K]) Key() K { return t.key }

// Shared reports whether the ticket was granted in shared mode.
func (t *Ticket[K]) Shared() bool { return t.shared }

// Value returns the value that the previous holder passed with Handoff, or
// nil if the ticket was granted by a plain Release or at once. Read it after
// Lock returns.
func (t *Ticket[K]) Value() any { return t.value }

// Lock waits for key in exclusive mode: until every earlier ticket for key
// has been released and no other is held. On success the caller holds the
// returned ticket. If ctx ends first, Lock returns ctx.Err() and leaves the
// queue as if it had never been called: a plain grant that raced with the end
// of ctx is passed on to the next waiter. A grant that carries a Handoff
// value cannot be passed on without losing the value, so it wins the race:
// Lock returns the ticket and a nil error even though ctx has ended. A ctx
// already done never acquires.
func (q *Queue[K]) Lock(ctx context.Context, key K) (*Ticket[K], error) {
	return q.acquire(ctx, key, false)
}

// LockShared waits for key in shared mode: shared tickets are held together,
// but not with an exclusive one, and not ahead of an earlier exclusive
// request. Otherwise as Lock.
func (q *Queue[K]) LockShared(ctx context.Context, key K) (*Ticket[K], error) {
	return q.acquire(ctx, key, true)
}

// TryLock takes key in exclusive mode if that is possible without waiting:
// nobody holds or waits for key. It reports false otherwise.
func (q *Queue[K]) TryLock(key K) (*Ticket[K], bool) {
	return q.try(key, false)
}

// TryLockShared takes key in shared mode if that is possible without waiting:
// no exclusive holder and nobody waiting. It reports false otherwise.
func (q *Queue[K]) TryLockShared(key K) (*Ticket[K], bool) {
	return q.try(key, true)
}

// Len returns the number of keys that have a holder or a waiter.
func (q *Queue[K]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.keys)
}

// Waiting returns the number of tickets waiting (not yet granted) for key.
func (q *Queue[K]) Waiting(key K) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e := q.keys[key]; e != nil {
		return e.waiting
	}
	return 0
}

// Holders returns the number of tickets held for key.
func (q *Queue[K]) Holders(key K) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e := q.keys[key]; e != nil {
		return e.holders
	}
	return 0
}

// entryLocked returns key's entry, creating it. q.mu must be held.
func (q *Queue[K]) entryLocked(key K) *entry[K] {
	e := q.keys[key]
	if e == nil {
		if q.keys == nil {
			q.keys = make(map[K]*entry[K])
		}
		if n := len(q.free); n > 0 {
			e = q.free[n-1]
			q.free = q.free[:n-1]
		} else {
			e = &entry[K]{}
		}
		q.keys[key] = e
	}
	return e
}

func (q *Queue[K]) try(key K, shared bool) (*Ticket[K], bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.keys[key]
	if e != nil && (e.head != nil || !e.compatible(shared)) {
		return nil, false
	}
	if e == nil {
		e = q.entryLocked(key)
	}
	t := &Ticket[K]{q: q, e: e, key: key, shared: shared}
	e.grant(t)
	return t, true
}

func (q *Queue[K]) acquire(ctx context.Context, key K, shared bool) (*Ticket[K], error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q.mu.Lock()
	e := q.entryLocked(key)
	t := &Ticket[K]{q: q, e: e, key: key, shared: shared}
	if e.head == nil && e.compatible(shared) {
		e.grant(t)
		q.mu.Unlock()
		return t, nil
	}
	t.ready = make(chan struct{})
	e.push(t)
	q.mu.Unlock()

	select {
	case <-t.ready:
		return t, nil
	case <-ctx.Done():
	}
	q.mu.Lock()
	if t.state == held && t.value != nil {
		// A handed-off value (a held server lock) must not be dropped.
		q.mu.Unlock()
		return t, nil
	}
	if t.state == held {
		// Granted between the end of ctx and now: give it on, as if this
		// call had never queued.
		q.releaseLocked(t)
		q.mu.Unlock()
		return nil, ctx.Err()
	}
	e.remove(t)
	t.state = done
	// Leaving may unblock those behind (shared requests behind an exclusive
	// one that gave up while shared tickets are held).
	e.wake()
	q.dropIfIdleLocked(e, key)
	q.mu.Unlock()
	return nil, ctx.Err()
}

// Release gives the ticket back and grants the key to the next waiters in
// order. It panics if the ticket was already released: a double release
// would let two holders in.
func (t *Ticket[K]) Release() {
	q := t.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.state != held {
		panic("keyqueue: Release of a ticket that is not held")
	}
	q.releaseLocked(t)
}

// Handoff passes an exclusive ticket straight to the first waiter, if that
// waiter wants the key exclusively, together with v (which must not be nil):
// the waiter's Lock returns with Value() == v, and the key is never free in
// between. It reports whether it did; if not (nobody waits, the first waiter
// wants it shared, or the ticket is shared), nothing changed and the caller
// still holds the ticket. After a true result the ticket is released.
//
// This lets the holder of a server-side lock hand the held lock itself to
// the next goroutine of the process instead of unlocking and letting it lock
// again. It panics if the ticket is not held or v is nil.
func (t *Ticket[K]) Handoff(v any) bool {
	if v == nil {
		panic("keyqueue: Handoff of a nil value")
	}
	q := t.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.state != held {
		panic("keyqueue: Handoff of a ticket that is not held")
	}
	e := t.e
	h := e.head
	if t.shared || h == nil || h.shared {
		return false
	}
	e.remove(h)
	t.state = done
	h.state = held
	h.value = v
	close(h.ready)
	return true
}

func (q *Queue[K]) releaseLocked(t *Ticket[K]) {
	e := t.e
	t.state = done
	e.holders--
	if e.holders == 0 {
		e.exclusive = false
		e.wake()
	}
	q.dropIfIdleLocked(e, t.key)
}

// dropIfIdleLocked forgets key when nobody holds or waits for it.
func (q *Queue[K]) dropIfIdleLocked(e *entry[K], key K) {
	if e.holders == 0 && e.head == nil {
		delete(q.keys, key)
		// No ticket refers to e any more (a released ticket never touches
		// its entry again), so it can serve another key.
		if len(q.free) < maxFree {
			*e = entry[K]{}
			q.free = append(q.free, e)
		}
	}
}

// compatible reports whether a request in that mode can be held together
// with the current holders.
func (e *entry[K]) compatible(shared bool) bool {
	return e.holders == 0 || (shared && !e.exclusive)
}

func (e *entry[K]) grant(t *Ticket[K]) {
	e.holders++
	e.exclusive = !t.shared
	t.state = held
}

// wake grants waiters from the head for as long as they are compatible: one
// exclusive, or a run of shared ones.
func (e *entry[K]) wake() {
	for t := e.head; t != nil && e.compatible(t.shared); t = e.head {
		e.remove(t)
		e.grant(t)
		close(t.ready)
	}
}

func (e *entry[K]) push(t *Ticket[K]) {
	t.prev = e.tail
	if e.tail != nil {
		e.tail.next = t
	} else {
		e.head = t
	}
	e.tail = t
	e.waiting++
}

func (e *entry[K]) remove(t *Ticket[K]) {
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		e.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else {
		e.tail = t.prev
	}
	t.prev, t.next = nil, nil
	e.waiting--
}
