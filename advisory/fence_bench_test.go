package advisory_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// BenchmarkLockRelease is one uncontended Lock and Release of a key drawn
// from a set of 1,000, per driver, without and with fencing (the token is
// drawn from the fencing sequence in the acquire statement). The warm-up
// lets every session of the pool learn the epoch before the timing starts.
// It runs on the shared test server, whose durability settings are itest's
// (or the env server's); internal/benchsuite's BenchmarkFencingPaired
// measures on a durable private server. benchstat pairs the fencing=off and
// fencing=on rows:
//
//	go test -run '^$' -bench LockRelease -count 5 ./advisory | tee new.txt
//	benchstat -col /fencing new.txt
func BenchmarkLockRelease(b *testing.B) {
	const benchKeys = 1000
	for _, driver := range itest.Drivers {
		b.Run("driver="+driver, func(b *testing.B) {
			db := itest.Open(b, driver)
			ctx := context.Background()
			if err := advisory.CreateFenceTable(ctx, db, ""); err != nil {
				b.Fatal(err)
			}
			for _, fencing := range []bool{false, true} {
				name := "fencing=off"
				var opts []advisory.Option
				if fencing {
					name = "fencing=on"
					opts = append(opts, advisory.WithFencing(""))
				}
				b.Run(name, func(b *testing.B) {
					l := advisory.New(db, opts...)
					// Warm the pool (one connection, kept idle between
					// iterations), whose sessions learn the epoch.
					for k := range benchKeys {
						if lease, err := l.Lock(ctx, keyspace.Int64(int64(k))); err != nil {
							b.Fatal(err)
						} else if err := lease.Release(ctx); err != nil {
							b.Fatal(err)
						}
					}
					b.ResetTimer()
					for b.Loop() {
						lease, err := l.Lock(ctx, keyspace.Int64(rand.Int64N(benchKeys)))
						if err != nil {
							b.Fatal(err)
						}
						if err := lease.Release(ctx); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}
