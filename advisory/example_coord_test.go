package advisory_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

func ExampleElector() {
	db, done := exampleDB()
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Terms are fencing tokens: the table is made once, like a migration.
	if err := advisory.CreateFenceTable(ctx, db, ""); err != nil {
		fmt.Println(err)
		return
	}
	key := keyspace.Hash("scheduler-leader")

	// Two candidates; in production each runs in a process of its own.
	terms, ended := make(chan string), make(chan string)
	candidate := func(name string) *advisory.Elector {
		el, err := advisory.NewElector(db, key, func(ctx context.Context, term int64) error {
			terms <- name
			<-ctx.Done() // lead until the lock is lost, Resign, or Run's ctx ends
			if errors.Is(context.Cause(ctx), advisory.ErrResigned) {
				ended <- name + " resigned"
			}
			return nil
		}, advisory.ElectAs(name))
		if err != nil {
			panic(err)
		}
		return el
	}
	a, b := candidate("node-a"), candidate("node-b")
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 2)
	go func() { ran <- a.Run(runCtx) }()
	fmt.Println(<-terms, "leads")
	first, _ := a.Term()
	go func() { ran <- b.Run(runCtx) }()

	// Any process can ask who leads.
	ld, err := advisory.CurrentLeader(ctx, db, key)
	fmt.Println("current leader:", ld.Identity, err)

	// Leadership moves when the leader gives it up (or dies).
	if err := a.Resign(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Println(<-ended)
	fmt.Println(<-terms, "leads")
	second, _ := b.Term()
	fmt.Println("term went up:", second > first)

	stop()
	<-ran
	<-ran
	// Output:
	// node-a leads
	// current leader: node-a <nil>
	// node-a resigned
	// node-b leads
	// term went up: true
}

func ExampleSemaphore() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()

	// At most 2 exports of one tenant at once, across every process.
	exports := keyspace.MustNamespace("example-exports", 77)
	sem, err := advisory.NewSemaphore(advisory.New(db), exports, "tenant-42", 2)
	if err != nil {
		fmt.Println(err)
		return
	}
	one, err := sem.Acquire(ctx) // waits (bounded by ctx) while all slots are held
	if err != nil {
		fmt.Println(err)
		return
	}
	two, _ := sem.TryAcquire(ctx)
	fmt.Println("holding slots", one.Slot(), two.Slot())

	_, err = sem.TryAcquire(ctx) // does not wait
	fmt.Println("third:", errors.Is(err, advisory.ErrNotAcquired))

	_ = two.Release(ctx)
	three, err := sem.TryAcquire(ctx)
	fmt.Println("after a release:", three.Slot(), err)
	_ = three.Release(ctx)
	_ = one.Release(ctx)
	// Output:
	// holding slots 0 1
	// third: true
	// after a release: 1 <nil>
}
