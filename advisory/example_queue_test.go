package advisory_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Many goroutines of one process contend for one key: they queue in memory
// and at most two connections of the pool are in use, however many wait.
func ExampleLocker_Lock_hotKey() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()

	l := advisory.New(db)
	key := keyspace.Hash("hot-counter")
	counter := 0
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lease, err := l.Lock(ctx, key)
			if err != nil {
				fmt.Println("lock:", err)
				return
			}
			counter++ // exclusive: no other holder anywhere
			_ = lease.Release(ctx)
		}()
	}
	wg.Wait()
	fmt.Println("counter:", counter)
	// Output: counter: 32
}

// AfterLost watches a lease without a goroutine: here it cancels the work
// that the lock protects as soon as the lock is lost.
func ExampleLease_AfterLost() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()

	l := advisory.New(db, advisory.WithKeepAlive(100*time.Millisecond))
	lease, err := l.Lock(ctx, keyspace.Hash("nightly-import"))
	if err != nil {
		fmt.Println("lock:", err)
		return
	}
	defer lease.Release(ctx)

	work, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := lease.AfterLost(func(err error) { cancel(err) })
	defer stop()

	// ... long work under work's context ...
	select {
	case <-work.Done():
		fmt.Println("lost:", context.Cause(work))
	default:
		fmt.Println("still held:", lease.Err() == nil)
	}
	// Output: still held: true
}
