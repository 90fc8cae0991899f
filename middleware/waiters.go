package middleware

import (
	"sync"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// waiters counts, per key, the requests of one middleware that wait for a
// key they found busy. Only contended requests touch it, so one mutex is
// enough: it is held for a map update, next to a wait of a round trip or
// more.
type waiters struct {
	max int
	mu  sync.Mutex
	n   map[keyspace.Key]int
}

func newWaiters(max int) *waiters {
	return &waiters{max: max, n: map[keyspace.Key]int{}}
}

// enter admits one more waiter for key, or reports false if max requests
// already wait for it.
func (w *waiters) enter(key keyspace.Key) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n[key] >= w.max {
		return false
	}
	w.n[key]++
	return true
}

// leave ends a wait that enter admitted.
func (w *waiters) leave(key keyspace.Key) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n[key]--; w.n[key] <= 0 {
		delete(w.n, key)
	}
}
