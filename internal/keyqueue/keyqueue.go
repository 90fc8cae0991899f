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
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// Queue is a set of per-key FIFO queues. The zero Queue is ready to use. A
// Queue is safe for concurrent use and must not be copied after first use.
//
// Keys are spread over shards, each with its own mutex, so that goroutines
// working on different keys rarely meet on one mutex. A shard keeps the
// state of its first few keys in use in slots of its own, next to its
// mutex, and only more keys in a map: the common case, a key taken and given
// back while few others are in use, then touches a few adjacent cache lines
// and allocates nothing for the key.
type Queue[K comparable] struct {
	shards [shardCount]shard[K]
	// waiters counts the tickets waiting for any key (Waiters).
	waiters atomic.Int64

	// OnWait, if not nil, runs when a Lock or LockShared call starts to
	// wait for key, on the caller's goroutine, without any mutex held;
	// ahead is how many tickets wait before it. Set it before the Queue's
	// first use.
	OnWait func(key K, shared bool, ahead int)
}

// shardCount is the number of shards of a Queue, and slotsPerShard the keys
// a shard keeps in slots before it needs its map.
const (
	shardCount    = 16
	slotsPerShard = 4
)

// seed hashes keys to shards; one for the process is enough, as nothing
// outside the Queue sees the hashes.
var seed = maphash.MakeSeed()

// shard is a part of a Queue's keys.
type shard[K comparable] struct {
	mu    sync.Mutex
	more  map[K]*entry[K] // the keys in use beyond the slots
	free  []*entry[K]     // entries of the map's idle keys, for reuse (at most maxFree)
	_     [64 - 40]byte   // mutex 8, map 8, slice 24: the slots start 64 bytes in
	slots [slotsPerShard]slot[K]
}

// slot holds one key in use, and its state, inside its shard.
type slot[K comparable] struct {
	key  K
	e    entry[K]
	used bool
}

// shardOf returns key's shard.
func (q *Queue[K]) shardOf(key K) *shard[K] {
	return &q.shards[maphash.Comparable(seed, key)%shardCount]
}

// maxFree bounds the entries a shard keeps for reuse by its map.
const maxFree = 4

// entry is the state of one key in use.
type entry[K comparable] struct {
	holders    int // tickets granted and not yet released
	head, tail *Ticket[K]
	// waiting counts the tickets between head and tail. It changes only
	// under the shard's mutex, but a holder may read it without (Ticket.Waiting).
	waiting   atomic.Int32
	slot      int8 // index of the slot that holds it, -1 for one of the map
	exclusive bool // the holders hold exclusively (then holders == 1)
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
	s      *shard[K]
	e      *entry[K]
	key    K
	shared bool
	state  uint8         // guarded by s.mu
	ready  chan struct{} // closed when a waiting ticket is granted; nil if granted at once
	value  any           // what Handoff passed along with the grant
	queued int64         // when it started to wait (clock); for Snapshot
	waited int64         // how long it waited until granted (ns)

	prev, next *Ticket[K] // neighbours in the wait list, guarded by s.mu
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
	n := 0
	for i := range q.shards {
		s := &q.shards[i]
		s.mu.Lock()
		n += len(s.more)
		for j := range s.slots {
			if s.slots[j].used {
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// Waiting returns the number of tickets waiting (not yet granted) for key.
func (q *Queue[K]) Waiting(key K) int {
	s := q.shardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.lookupLocked(key); e != nil {
		return int(e.waiting.Load())
	}
	return 0
}

// Waiting returns the number of tickets waiting for the ticket's key, as
// Queue.Waiting does, but without taking a mutex: the holder of a ticket can
// ask cheaply whether anyone waits behind it. The answer may be stale by the
// time it is used; Handoff, which acts on it, checks again. Call it only
// while the ticket is held.
func (t *Ticket[K]) Waiting() int {
	return int(t.e.waiting.Load())
}

// Holders returns the number of tickets held for key.
func (q *Queue[K]) Holders(key K) int {
	s := q.shardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.lookupLocked(key); e != nil {
		return e.holders
	}
	return 0
}

// lookupLocked returns key's entry, nil if key is not in use. s.mu must be
// held.
func (s *shard[K]) lookupLocked(key K) *entry[K] {
	for i := range s.slots {
		if sl := &s.slots[i]; sl.used && sl.key == key {
			return &sl.e
		}
	}
	if s.more != nil {
		return s.more[key]
	}
	return nil
}

// entryLocked returns key's entry, creating it. s.mu must be held.
func (s *shard[K]) entryLocked(key K) *entry[K] {
	if e := s.lookupLocked(key); e != nil {
		return e
	}
	for i := range s.slots {
		if sl := &s.slots[i]; !sl.used {
			sl.key, sl.used = key, true
			sl.e.slot = int8(i)
			return &sl.e
		}
	}
	if s.more == nil {
		s.more = make(map[K]*entry[K])
	}
	var e *entry[K]
	if n := len(s.free); n > 0 {
		e = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		e = &entry[K]{}
	}
	e.slot = -1
	s.more[key] = e
	return e
}

func (q *Queue[K]) try(key K, shared bool) (*Ticket[K], bool) {
	s := q.shardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.lookupLocked(key)
	if e != nil && (e.head != nil || !e.compatible(shared)) {
		return nil, false
	}
	if e == nil {
		e = s.entryLocked(key)
	}
	t := &Ticket[K]{s: s, e: e, key: key, shared: shared}
	e.grant(t)
	return t, true
}

func (q *Queue[K]) acquire(ctx context.Context, key K, shared bool) (*Ticket[K], error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := q.shardOf(key)
	s.mu.Lock()
	e := s.entryLocked(key)
	t := &Ticket[K]{s: s, e: e, key: key, shared: shared}
	if e.head == nil && e.compatible(shared) {
		e.grant(t)
		s.mu.Unlock()
		return t, nil
	}
	t.ready = make(chan struct{})
	t.queued = clock()
	e.push(t)
	ahead := int(e.waiting.Load()) - 1
	s.mu.Unlock()
	q.waiters.Add(1)
	defer q.waiters.Add(-1)
	if q.OnWait != nil {
		q.OnWait(key, shared, ahead)
	}

	select {
	case <-t.ready:
		t.waited = clock() - t.queued
		return t, nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	if t.state == held && t.value != nil {
		// A handed-off value (a held server lock) must not be dropped.
		s.mu.Unlock()
		t.waited = clock() - t.queued
		return t, nil
	}
	if t.state == held {
		// Granted between the end of ctx and now: give it on, as if this
		// call had never queued.
		s.releaseLocked(t)
		s.mu.Unlock()
		return nil, ctx.Err()
	}
	e.remove(t)
	t.state = done
	// Leaving may unblock those behind (shared requests behind an exclusive
	// one that gave up while shared tickets are held).
	e.wake()
	s.dropIfIdleLocked(e, key)
	s.mu.Unlock()
	return nil, ctx.Err()
}

// Release gives the ticket back and grants the key to the next waiters in
// order. It panics if the ticket was already released: a double release
// would let two holders in.
func (t *Ticket[K]) Release() {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.state != held {
		panic("keyqueue: Release of a ticket that is not held")
	}
	s.releaseLocked(t)
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
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
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

func (s *shard[K]) releaseLocked(t *Ticket[K]) {
	e := t.e
	t.state = done
	e.holders--
	if e.holders == 0 {
		e.exclusive = false
		e.wake()
	}
	s.dropIfIdleLocked(e, t.key)
}

// dropIfIdleLocked forgets key when nobody holds or waits for it.
func (s *shard[K]) dropIfIdleLocked(e *entry[K], key K) {
	if e.holders != 0 || e.head != nil {
		return
	}
	// No ticket refers to e any more (a released ticket never touches its
	// entry again), so it can serve another key.
	if e.slot >= 0 {
		sl := &s.slots[e.slot]
		var zero K
		sl.key, sl.used = zero, false // the key is not kept alive
		e.reset()
		return
	}
	delete(s.more, key)
	if len(s.free) < maxFree {
		e.reset()
		s.free = append(s.free, e)
	}
}

// reset makes e the state of a key nobody holds or waits for; its slot stays.
func (e *entry[K]) reset() {
	e.holders, e.exclusive, e.head, e.tail = 0, false, nil, nil
	e.waiting.Store(0)
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
	e.waiting.Add(1)
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
	e.waiting.Add(-1)
}
