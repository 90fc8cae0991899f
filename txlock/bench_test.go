package txlock_test

import (
	"context"
	"testing"

	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// BenchmarkTryLock measures one TryLock inside an open transaction, with keys
// as parameters (a plain *sql.Tx) and in the driver's own style (a value that
// tells its driver), on both drivers.
func BenchmarkTryLock(b *testing.B) {
	for _, driverName := range itest.Drivers {
		db := itest.Open(b, driverName)
		ctx := context.Background()
		for _, style := range []string{"params", "driver-style"} {
			b.Run(driverName+"/"+style, func(b *testing.B) {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer tx.Rollback()
				var q txlock.Querier = tx
				if style == "driver-style" {
					q = styledTx{tx, db.Driver()}
				}
				i := int32(0)
				for b.Loop() {
					i++
					if ok, err := txlock.TryLock(ctx, q, keyspace.Pair(9, i)); err != nil || !ok {
						b.Fatal(ok, err)
					}
				}
			})
		}
	}
}
