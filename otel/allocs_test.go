package oteladvisory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
	oteladvisory "github.com/pgadvisory/pgadvisory/otel"
)

// TestHooksAllocs: with the SDK's MeterProvider and no spans, the hooks
// record an acquire and a release without allocating, for a key of a
// registered namespace and for one without. (A loss, rare, may allocate
// while its cause is classified.)
func TestHooksAllocs(t *testing.T) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	in, err := oteladvisory.New(oteladvisory.WithMeterProvider(mp), oteladvisory.WithoutSpans())
	if err != nil {
		t.Fatal(err)
	}
	h := in.Hooks()
	ctx := context.Background()
	lossErr := errors.New("gone")
	for _, key := range []keyspace.Key{ns.ID(1), keyspace.Int64(42)} {
		e := advisory.AcquireEvent{Key: key, Keys: 1, Outcome: advisory.Acquired, Wait: 300 * time.Microsecond,
			Queued: true, QueueWait: 100 * time.Microsecond, HandedOver: true}
		h.Acquire(ctx, e) // the first use of a namespace makes its attribute sets
		allocs := testing.AllocsPerRun(1000, func() {
			h.Acquire(ctx, e)
			h.Released(key, false, time.Millisecond)
		})
		if allocs > 0 {
			t.Errorf("key %v: %.1f allocations per acquire and release, want 0", key, allocs)
		}
		if allocs := testing.AllocsPerRun(100, func() { h.Lost(key, lossErr) }); allocs > 4 {
			t.Errorf("key %v: %.1f allocations per loss, want at most 4", key, allocs)
		}
	}
}

// spanAllocs is what TestSpanAllocs allows (one more with -race).
var spanAllocs = 6.0

// TestSpanAllocs: with the SDK's TracerProvider (every span sampled), the
// span of an acquire of one key that did not queue allocates at most 6
// times: the span, its context and its copy of the attributes (the
// SDK's), the two timestamps and the options (the adapter's). It was 9
// when the attributes were built in each call and the span kind option
// made in each call.
func TestSpanAllocs(t *testing.T) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer tp.Shutdown(context.Background())
	in, err := oteladvisory.New(oteladvisory.WithMeterProvider(mp), oteladvisory.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	h := in.Hooks()
	ctx := context.Background()
	for _, key := range []keyspace.Key{ns.ID(1), keyspace.Int64(42)} {
		for _, e := range []advisory.AcquireEvent{
			{Key: key, Keys: 1, Outcome: advisory.Acquired, Wait: 300 * time.Microsecond},
			{Key: key, Keys: 1, Shared: true, Try: true, Outcome: advisory.Busy, Wait: 300 * time.Microsecond, HandedOver: true},
		} {
			h.Acquire(ctx, e)
			if allocs := testing.AllocsPerRun(1000, func() { h.Acquire(ctx, e) }); allocs > spanAllocs {
				t.Errorf("key %v, %v: %.1f allocations per acquire with a span, want at most %v", key, e.Outcome, allocs, spanAllocs)
			}
		}
	}
}

// BenchmarkHooks measures what the hooks cost per acquire and release,
// without a server: metrics only, and metrics with a span per acquire (an
// SDK TracerProvider that samples every span and exports none).
func BenchmarkHooks(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer tp.Shutdown(context.Background())
	for _, tc := range []struct {
		name string
		opts []oteladvisory.Option
	}{{"metrics", []oteladvisory.Option{oteladvisory.WithoutSpans()}}, {"spans", []oteladvisory.Option{oteladvisory.WithTracerProvider(tp)}}} {
		b.Run(tc.name, func(b *testing.B) {
			in, err := oteladvisory.New(append(tc.opts, oteladvisory.WithMeterProvider(mp))...)
			if err != nil {
				b.Fatal(err)
			}
			h := in.Hooks()
			ctx := context.Background()
			e := advisory.AcquireEvent{Key: ns.ID(1), Keys: 1, Outcome: advisory.Acquired, Wait: 300 * time.Microsecond}
			b.ReportAllocs()
			for b.Loop() {
				h.Acquire(ctx, e)
				h.Released(e.Key, false, time.Millisecond)
			}
		})
	}
}
