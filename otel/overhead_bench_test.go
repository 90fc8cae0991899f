package oteladvisory_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	oteladvisory "github.com/pgadvisory/pgadvisory/otel"
)

// BenchmarkOverheadPaired measures what the adapter costs on an
// uncontended Lock and Release, paired: every iteration runs one
// lock+release through a Locker without hooks ("plain") and one through a
// Locker with the adapter's hooks ("otel"), over the same pool, on random
// keys of a registered namespace, the first of the two alternating from
// one iteration to the next, and times each. Both forms then share every
// moment of the run, so that load drifting on a shared machine weighs on
// both alike. Metrics: plain-ns/op and otel-ns/op (per lock+release of one
// goroutine), overhead-% (otel time over plain time, minus one) and
// median-overhead-% (the median of the pairs' differences over the median
// plain time, which a burst of load that slows a few operations hardly
// moves).
//
// sessions=multiplexed is the default kind of Locker: each of the two keeps
// its own session (one connection each, for the whole run), so the two
// forms run on different backends, whose speed can differ by several
// percent for reasons of the server's scheduling. sessions=dedicated takes
// a connection of the pool per lease: the two forms then take turns on the
// same connections (the pool gives out the one returned last), which makes
// the pairing tighter; at conns=8, 8 goroutines run pairs at once.
//
// pair=calibration runs two plain Lockers against each other: its
// overhead is the harness's own error. pair=metrics records the metrics
// (an SDK MeterProvider with a ManualReader, WithoutSpans); pair=spans
// records the metrics and a span per acquire (an SDK TracerProvider that
// samples every span and exports none, so that the spans are built and
// ended but their export, which runs off the caller's goroutine in a
// BatchSpanProcessor, is not counted).
func BenchmarkOverheadPaired(b *testing.B) {
	for _, driver := range itest.Drivers {
		b.Run("driver="+driver, func(b *testing.B) {
			dsn := itest.DSN(b)
			db := itest.OpenDSN(b, driver, dsn)
			admin := itest.OpenDSN(b, "postgres", dsn)
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			defer mp.Shutdown(context.Background())
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
			defer tp.Shutdown(context.Background())
			metricsOnly, err := oteladvisory.New(oteladvisory.WithMeterProvider(mp), oteladvisory.WithoutSpans())
			if err != nil {
				b.Fatal(err)
			}
			withSpans, err := oteladvisory.New(oteladvisory.WithMeterProvider(mp), oteladvisory.WithTracerProvider(tp))
			if err != nil {
				b.Fatal(err)
			}
			for _, pair := range []struct {
				name  string
				hooks advisory.Hooks
			}{{"calibration", advisory.Hooks{}}, {"metrics", metricsOnly.Hooks()}, {"spans", withSpans.Hooks()}} {
				for _, c := range []struct {
					sessions string
					conns    int
				}{{"multiplexed", 1}, {"dedicated", 1}, {"dedicated", 8}} {
					b.Run(fmt.Sprintf("sessions=%s/conns=%d/pair=%s", c.sessions, c.conns, pair.name), func(b *testing.B) {
						var opts []advisory.Option
						if c.sessions == "dedicated" {
							opts = append(opts, advisory.WithDedicatedSessions())
						}
						plain := advisory.New(db, opts...)
						instrumented := advisory.New(db, append(opts, advisory.WithHooks(pair.hooks))...)
						runPaired(b, db, c.conns, plain, instrumented)
					})
				}
			}
			testkit.WaitConnsIdle(b, db)
			testkit.WaitNoAdvisoryLocks(b, admin)
		})
	}
}

// runPaired runs lock+release through a and through c in turns on conns
// goroutines and reports the time of each.
func runPaired(b *testing.B, db *sql.DB, conns int, a, c *advisory.Locker) {
	db.SetMaxOpenConns(4 * conns)
	db.SetMaxIdleConns(4 * conns)
	ctx := context.Background()
	var seq atomic.Uint64
	one := func(l *advisory.Locker, r *rand.Rand) (time.Duration, error) {
		t0 := time.Now()
		lease, err := l.Lock(ctx, ns.ID(r.Int32()))
		if err != nil {
			return 0, err
		}
		err = lease.Release(ctx)
		return time.Since(t0), err
	}
	var aNS, cNS atomic.Int64
	var mu sync.Mutex
	var diffs, plains []int64 // per pair: otel time minus plain time, and plain time
	loop := func(n int, more func() bool) error {
		var myDiffs, myPlains []int64
		defer func() {
			mu.Lock()
			diffs = append(diffs, myDiffs...)
			plains = append(plains, myPlains...)
			mu.Unlock()
		}()
		r := rand.New(rand.NewPCG(seq.Add(1), 0x9e3779b97f4a7c15))
		aFirst := seq.Load()%2 == 0
		for i := 0; n < 0 || i < n; i++ {
			if more != nil && !more() {
				break
			}
			first, second := a, c
			if !aFirst {
				first, second = c, a
			}
			d1, err := one(first, r)
			if err != nil {
				return err
			}
			d2, err := one(second, r)
			if err != nil {
				return err
			}
			if !aFirst {
				d1, d2 = d2, d1
			}
			aNS.Add(int64(d1))
			cNS.Add(int64(d2))
			myDiffs = append(myDiffs, int64(d2-d1))
			myPlains = append(myPlains, int64(d1))
			aFirst = !aFirst
		}
		return nil
	}
	// Warm up: sessions open, statements prepared, attribute sets made.
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			if err := loop(50, nil); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	aNS.Store(0)
	cNS.Store(0)
	diffs, plains = nil, nil
	b.ReportAllocs()
	b.ResetTimer()
	if conns == 1 {
		if err := loop(-1, b.Loop); err != nil {
			b.Fatal(err)
		}
	} else {
		b.SetParallelism((conns + 1) / 2) // GOMAXPROCS is 2 here: conns goroutines
		b.RunParallel(func(pb *testing.PB) {
			if err := loop(-1, pb.Next); err != nil {
				b.Error(err)
			}
		})
	}
	at, ct := float64(aNS.Load()), float64(cNS.Load())
	b.ReportMetric(at/float64(b.N), "plain-ns/op")
	b.ReportMetric(ct/float64(b.N), "otel-ns/op")
	if at > 0 {
		b.ReportMetric((ct/at-1)*100, "overhead-%")
	}
	if len(diffs) > 0 {
		// The median of the pairs' differences over the median plain
		// time: a burst of load that slows a few operations moves the
		// sums above but hardly these.
		slices.Sort(diffs)
		slices.Sort(plains)
		b.ReportMetric(float64(diffs[len(diffs)/2])/float64(plains[len(plains)/2])*100, "median-overhead-%")
	}
}
