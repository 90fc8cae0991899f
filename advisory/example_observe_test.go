package advisory_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// A debug endpoint that shows what a Locker holds and what waits in the
// process for which key: Stats and Waiting encode to JSON as they are.
func ExampleLocker_Waiting() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()
	orders := keyspace.MustNamespace("orders", 7)

	l := advisory.New(db)
	debug := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			Stats   advisory.Stats       `json:"stats"`
			Waiting []advisory.QueuedKey `json:"waiting"`
		}{l.Stats(), l.Waiting()})
	})

	lease, err := l.Lock(ctx, orders.ID(42))
	if err != nil {
		fmt.Println("lock:", err)
		return
	}
	// Another goroutine of the process wants the same order: it waits in
	// memory behind the lease.
	got := make(chan error)
	go func() {
		next, err := l.Lock(ctx, orders.ID(42))
		if err == nil {
			err = next.Release(ctx)
		}
		got <- err
	}()
	for l.Stats().Queued == 0 {
		time.Sleep(time.Millisecond)
	}

	rec := httptest.NewRecorder()
	debug.ServeHTTP(rec, httptest.NewRequest("GET", "/debug/locks", nil))
	var page struct {
		Stats   advisory.Stats `json:"stats"`
		Waiting []struct {
			Key     string `json:"key"`
			Waiters []struct {
				Shared bool `json:"shared"`
			} `json:"waiters"`
		} `json:"waiting"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("held %d, queued %d\n", page.Stats.Held, page.Stats.Queued)
	for _, k := range page.Waiting {
		fmt.Printf("%s: %d waiting\n", k.Key, len(k.Waiters))
	}

	if err := lease.Release(ctx); err != nil {
		fmt.Println("release:", err)
	}
	if err := <-got; err != nil {
		fmt.Println("waiter:", err)
	}
	// Output:
	// held 1, queued 1
	// orders/42: 1 waiting
}
