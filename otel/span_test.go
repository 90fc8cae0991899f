package oteladvisory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
	oteladvisory "github.com/pgadvisory/pgadvisory/otel"
)

// TestSpan pins what the span of an acquire carries, without a server:
// its name, kind, parent, scope, attributes (each case's exact set), its
// start (the end minus the wait) and, for the outcome failed only, an
// error status and the error as an event.
func TestSpan(t *testing.T) {
	nsAttr := oteladvisory.AttrNamespace.String(ns.Name())
	bigint := keyspace.Int64(42)
	lossErr := errors.New("advisory: connection gone")
	for _, tc := range []struct {
		name    string
		withKey bool
		e       advisory.AcquireEvent
		want    []attribute.KeyValue
	}{{
		name: "acquired",
		e:    advisory.AcquireEvent{Key: ns.ID(1), Keys: 1, Outcome: advisory.Acquired, Wait: 300 * time.Microsecond},
		want: []attribute.KeyValue{oteladvisory.AttrOutcome.String("acquired"), oteladvisory.AttrMode.String("exclusive"),
			oteladvisory.AttrTry.Bool(false), oteladvisory.AttrQueued.Bool(false), oteladvisory.AttrKeys.Int(1), nsAttr},
	}, {
		name: "busy shared try, no namespace",
		e:    advisory.AcquireEvent{Key: bigint, Keys: 1, Shared: true, Try: true, Outcome: advisory.Busy, Wait: time.Millisecond},
		want: []attribute.KeyValue{oteladvisory.AttrOutcome.String("busy"), oteladvisory.AttrMode.String("shared"),
			oteladvisory.AttrTry.Bool(true), oteladvisory.AttrQueued.Bool(false), oteladvisory.AttrKeys.Int(1)},
	}, {
		name: "queued and handed over",
		e: advisory.AcquireEvent{Key: ns.ID(2), Keys: 1, Outcome: advisory.Acquired, Wait: 2 * time.Millisecond,
			Queued: true, QueueWait: 1500 * time.Microsecond, HandedOver: true},
		want: []attribute.KeyValue{oteladvisory.AttrOutcome.String("acquired"), oteladvisory.AttrMode.String("exclusive"),
			oteladvisory.AttrTry.Bool(false), oteladvisory.AttrQueued.Bool(true), oteladvisory.AttrKeys.Int(1),
			oteladvisory.AttrQueueWaitMS.Float64(1.5), oteladvisory.AttrHandedOver.Bool(true), nsAttr},
	}, {
		name: "handed over, not queued",
		e:    advisory.AcquireEvent{Key: ns.ID(2), Keys: 1, Outcome: advisory.Acquired, Wait: time.Microsecond, HandedOver: true},
		want: []attribute.KeyValue{oteladvisory.AttrOutcome.String("acquired"), oteladvisory.AttrMode.String("exclusive"),
			oteladvisory.AttrTry.Bool(false), oteladvisory.AttrQueued.Bool(false), oteladvisory.AttrKeys.Int(1),
			oteladvisory.AttrHandedOver.Bool(true), nsAttr},
	}, {
		name: "LockAll timeout",
		e:    advisory.AcquireEvent{Key: ns.ID(3), Keys: 3, Outcome: advisory.Timeout, Wait: 50 * time.Millisecond},
		want: []attribute.KeyValue{oteladvisory.AttrOutcome.String("timeout"), oteladvisory.AttrMode.String("exclusive"),
			oteladvisory.AttrTry.Bool(false), oteladvisory.AttrQueued.Bool(false), oteladvisory.AttrKeys.Int(3), nsAttr},
	}, {
		name: "cancelled in the queue, shared",
		e: advisory.AcquireEvent{Key: bigint, Keys: 1, Shared: true, Outcome: advisory.Cancelled, Wait: 10 * time.Millisecond,
			Queued: true, QueueWait: 10 * time.Millisecond},
		want: []attribute.KeyValue{oteladvisory.AttrOutcome.String("cancelled"), oteladvisory.AttrMode.String("shared"),
			oteladvisory.AttrTry.Bool(false), oteladvisory.AttrQueued.Bool(true), oteladvisory.AttrKeys.Int(1),
			oteladvisory.AttrQueueWaitMS.Float64(10)},
	}, {
		name: "failed",
		e:    advisory.AcquireEvent{Key: ns.ID(4), Keys: 1, Try: true, Outcome: advisory.Failed, Err: lossErr, Wait: 5 * time.Millisecond},
		want: []attribute.KeyValue{oteladvisory.AttrOutcome.String("failed"), oteladvisory.AttrMode.String("exclusive"),
			oteladvisory.AttrTry.Bool(true), oteladvisory.AttrQueued.Bool(false), oteladvisory.AttrKeys.Int(1), nsAttr},
	}, {
		name:    "with the key",
		withKey: true,
		e:       advisory.AcquireEvent{Key: ns.ID(5), Keys: 1, Outcome: advisory.Acquired, Wait: time.Millisecond},
		want: []attribute.KeyValue{oteladvisory.AttrOutcome.String("acquired"), oteladvisory.AttrMode.String("exclusive"),
			oteladvisory.AttrTry.Bool(false), oteladvisory.AttrQueued.Bool(false), oteladvisory.AttrKeys.Int(1), nsAttr,
			oteladvisory.AttrKey.String(ns.ID(5).String())},
	}, {
		name:    "with the key, no namespace, queued",
		withKey: true,
		e: advisory.AcquireEvent{Key: bigint, Keys: 2, Outcome: advisory.Acquired, Wait: time.Millisecond,
			Queued: true, QueueWait: 250 * time.Microsecond},
		want: []attribute.KeyValue{oteladvisory.AttrOutcome.String("acquired"), oteladvisory.AttrMode.String("exclusive"),
			oteladvisory.AttrTry.Bool(false), oteladvisory.AttrQueued.Bool(true), oteladvisory.AttrKeys.Int(2),
			oteladvisory.AttrQueueWaitMS.Float64(0.25), oteladvisory.AttrKey.String(bigint.String())},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			spans := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
			defer tp.Shutdown(context.Background())
			opts := []oteladvisory.Option{oteladvisory.WithTracerProvider(tp)}
			if tc.withKey {
				opts = append(opts, oteladvisory.WithKeyAttribute())
			}
			in, err := oteladvisory.New(opts...)
			if err != nil {
				t.Fatal(err)
			}
			ctx, parent := tp.Tracer("test").Start(context.Background(), "caller")
			before := time.Now()
			in.Hooks().Acquire(ctx, tc.e)
			after := time.Now()
			parent.End()
			var s sdktrace.ReadOnlySpan
			for _, r := range spans.Ended() {
				if r.Name() == "pgadvisory.acquire" {
					if s != nil {
						t.Fatal("two acquire spans")
					}
					s = r
				}
			}
			if s == nil {
				t.Fatal("no acquire span")
			}
			if s.SpanKind() != trace.SpanKindClient {
				t.Errorf("kind %v, want client", s.SpanKind())
			}
			if s.Parent().SpanID() != parent.SpanContext().SpanID() {
				t.Errorf("parent %v, want the caller's %v", s.Parent().SpanID(), parent.SpanContext().SpanID())
			}
			if s.InstrumentationScope().Name != oteladvisory.ScopeName {
				t.Errorf("scope %q, want %q", s.InstrumentationScope().Name, oteladvisory.ScopeName)
			}
			if got, want := attribute.NewSet(s.Attributes()...), attribute.NewSet(tc.want...); !got.Equals(&want) {
				t.Errorf("attributes\n%v\nwant\n%v", got.Encoded(attribute.DefaultEncoder()), want.Encoded(attribute.DefaultEncoder()))
			}
			if len(s.Attributes()) != len(tc.want) {
				t.Errorf("%d attributes, want %d", len(s.Attributes()), len(tc.want))
			}
			if d := s.EndTime().Sub(s.StartTime()); d != tc.e.Wait {
				t.Errorf("span lasted %v, want the wait %v", d, tc.e.Wait)
			}
			if s.EndTime().Before(before) || s.EndTime().After(after) {
				t.Errorf("span ended at %v, want between %v and %v (the hook's call)", s.EndTime(), before, after)
			}
			if tc.e.Outcome == advisory.Failed {
				if s.Status().Code != codes.Error || s.Status().Description != "failed" {
					t.Errorf("status %+v, want error \"failed\"", s.Status())
				}
				if ev := s.Events(); len(ev) != 1 || ev[0].Name != "exception" {
					t.Errorf("events %+v, want the error recorded", ev)
				} else if set := attribute.NewSet(ev[0].Attributes...); set.Len() == 0 {
					t.Errorf("the error's event has no attributes")
				} else if v, _ := set.Value("exception.message"); v.AsString() != lossErr.Error() {
					t.Errorf("exception.message %q, want %q", v.AsString(), lossErr.Error())
				}
			} else {
				if s.Status().Code != codes.Unset {
					t.Errorf("status %+v, want unset", s.Status())
				}
				if len(s.Events()) != 0 {
					t.Errorf("events %+v, want none", s.Events())
				}
			}
		})
	}
}

// TestSpanNotSampled: a span the sampler drops is not recorded, whatever
// the outcome.
func TestSpanNotSampled(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans), sdktrace.WithSampler(sdktrace.NeverSample()))
	defer tp.Shutdown(context.Background())
	in, err := oteladvisory.New(oteladvisory.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	in.Hooks().Acquire(context.Background(), advisory.AcquireEvent{Key: ns.ID(1), Keys: 1, Outcome: advisory.Failed,
		Err: errors.New("x"), Wait: time.Millisecond})
	if n := len(spans.Ended()); n != 0 {
		t.Errorf("%d spans recorded, want none", n)
	}
}
