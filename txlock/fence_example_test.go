package txlock_test

import (
	"context"
	"fmt"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// A transaction lock with a fencing token for a store outside the database.
// A token is never handed out twice, even when the transaction that got it
// rolls back: the next holder's token is higher.
func ExampleLockToken() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()
	if err := advisory.CreateFenceTable(ctx, db, ""); err != nil {
		fmt.Println(err)
		return
	}
	key := keyspace.Hash("invoice:42")

	var last int64
	for _, commit := range []bool{false, true} {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			fmt.Println(err)
			return
		}
		token, err := txlock.LockToken(ctx, db, tx, key, "")
		if err != nil {
			fmt.Println("lock:", err)
			_ = tx.Rollback()
			return
		}
		// Writes here, and to the outside store with token, which rejects
		// a token lower than the highest it has seen.
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		// Only the order of tokens means something (a token is
		// epoch<<40 | counter, the counter drawn from one sequence for
		// all keys).
		fmt.Println("higher than the last:", token > last, "commit:", commit, err)
		last = token
	}
	// Output:
	// higher than the last: true commit: false <nil>
	// higher than the last: true commit: true <nil>
}
