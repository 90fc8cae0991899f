package oteladvisory

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// ScopeName is the instrumentation scope of the meter and the tracer.
const ScopeName = "github.com/pgadvisory/pgadvisory/otel"

// Attribute keys.
const (
	AttrOutcome     = attribute.Key("pgadvisory.outcome")
	AttrMode        = attribute.Key("pgadvisory.mode")
	AttrTry         = attribute.Key("pgadvisory.try")
	AttrQueued      = attribute.Key("pgadvisory.queued")
	AttrNamespace   = attribute.Key("pgadvisory.namespace")
	AttrCause       = attribute.Key("pgadvisory.cause")
	AttrWait        = attribute.Key("pgadvisory.wait")
	AttrSession     = attribute.Key("pgadvisory.session")
	AttrKeys        = attribute.Key("pgadvisory.keys")
	AttrKey         = attribute.Key("pgadvisory.key")
	AttrHandedOver  = attribute.Key("pgadvisory.handed_over")
	AttrQueueWaitMS = attribute.Key("pgadvisory.queue_wait_ms")
)

// Buckets are the bucket boundaries of the histograms, in seconds: from
// 100 µs (an uncontended lock on a local server) to a minute.
var Buckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Option configures an Instrumentation.
type Option func(*config)

type config struct {
	mp      metric.MeterProvider
	tp      trace.TracerProvider
	noSpans bool
	withKey bool
}

// WithMeterProvider sets where the metrics go; the default is
// otel.GetMeterProvider().
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithTracerProvider sets where the spans go; the default is
// otel.GetTracerProvider().
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithoutSpans records metrics only.
func WithoutSpans() Option {
	return func(c *config) { c.noSpans = true }
}

// WithKeyAttribute adds the key (Key.String) to each span as
// pgadvisory.key. Keys are unbounded, so they never become metric
// attributes.
func WithKeyAttribute() Option {
	return func(c *config) { c.withKey = true }
}

// Instrumentation records the events of the Lockers that use its Hooks,
// and the Stats of those given to Observe. It is safe for concurrent use.
type Instrumentation struct {
	cfg    config
	tracer trace.Tracer

	wait, queueWait, hold metric.Float64Histogram
	losses, handoffs      metric.Int64Counter

	none   *nsAttrs // keys without a registered namespace
	nsMu   sync.Mutex
	byNS   sync.Map // int32 -> *nsAttrs; grows with the registered namespaces only
	regMu  sync.Mutex
	reg    metric.Registration
	watchM sync.Mutex
	locks  []*watched
	// retired holds the batch counts of the Lockers whose observation
	// stopped, so that the counters never go down.
	retired advisory.Stats
}

// watched is one Locker given to Observe.
type watched struct{ l *advisory.Locker }

// New makes the instruments. It fails only if the MeterProvider refuses
// one.
func New(opts ...Option) (*Instrumentation, error) {
	in := &Instrumentation{}
	for _, o := range opts {
		if o != nil {
			o(&in.cfg)
		}
	}
	if in.cfg.mp == nil {
		in.cfg.mp = otel.GetMeterProvider()
	}
	if in.cfg.tp == nil {
		in.cfg.tp = otel.GetTracerProvider()
	}
	in.tracer = in.cfg.tp.Tracer(ScopeName)
	m := in.cfg.mp.Meter(ScopeName)
	var errs []error
	hist := func(name, desc string) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(Buckets...))
		errs = append(errs, err)
		return h
	}
	in.wait = hist("pgadvisory.acquire.duration", "Time from an acquire call to its outcome.")
	in.queueWait = hist("pgadvisory.acquire.queue.duration", "Time an acquire waited in the process's own queue behind other leases.")
	in.hold = hist("pgadvisory.lease.duration", "Time a lease was held, from its grant to its release.")
	var err error
	in.losses, err = m.Int64Counter("pgadvisory.lease.losses", metric.WithUnit("{lease}"),
		metric.WithDescription("Leases lost while held, by cause."))
	errs = append(errs, err)
	in.handoffs, err = m.Int64Counter("pgadvisory.handoffs", metric.WithUnit("{lease}"),
		metric.WithDescription("Locks handed over to the next goroutine of the process without a round trip."))
	errs = append(errs, err)
	held, err := m.Int64ObservableGauge("pgadvisory.leases", metric.WithUnit("{lease}"),
		metric.WithDescription("Leases held."))
	errs = append(errs, err)
	waiters, err := m.Int64ObservableGauge("pgadvisory.waiters", metric.WithUnit("{goroutine}"),
		metric.WithDescription("Acquires waiting: in the process's queue, or on the server."))
	errs = append(errs, err)
	sessions, err := m.Int64ObservableGauge("pgadvisory.sessions", metric.WithUnit("{connection}"),
		metric.WithDescription("Sessions open, by kind; each pins one connection of the pool."))
	errs = append(errs, err)
	batches, err := m.Int64ObservableCounter("pgadvisory.batches", metric.WithUnit("{statement}"),
		metric.WithDescription("Statements the multiplexed sessions sent for tries and releases."))
	errs = append(errs, err)
	batchedOps, err := m.Int64ObservableCounter("pgadvisory.batch.operations", metric.WithUnit("{operation}"),
		metric.WithDescription("Tries and releases those statements carried; divided by pgadvisory.batches, the mean batch size."))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	waitQueue := metric.WithAttributeSet(attribute.NewSet(AttrWait.String("queue")))
	waitServer := metric.WithAttributeSet(attribute.NewSet(AttrWait.String("server")))
	mux := metric.WithAttributeSet(attribute.NewSet(AttrSession.String("multiplexed")))
	ded := metric.WithAttributeSet(attribute.NewSet(AttrSession.String("dedicated")))
	in.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		var sum advisory.Stats
		in.watchM.Lock()
		sum.Batches, sum.BatchedOps = in.retired.Batches, in.retired.BatchedOps
		for _, w := range in.locks {
			st := w.l.Stats()
			sum.Held += st.Held
			sum.Queued += st.Queued
			sum.WaitingOnServer += st.WaitingOnServer
			sum.Multiplexed += st.Multiplexed
			sum.Dedicated += st.Dedicated
			sum.Batches += st.Batches
			sum.BatchedOps += st.BatchedOps
		}
		in.watchM.Unlock()
		o.ObserveInt64(held, int64(sum.Held))
		o.ObserveInt64(waiters, int64(sum.Queued), waitQueue)
		o.ObserveInt64(waiters, int64(sum.WaitingOnServer), waitServer)
		o.ObserveInt64(sessions, int64(sum.Multiplexed), mux)
		o.ObserveInt64(sessions, int64(sum.Dedicated), ded)
		o.ObserveInt64(batches, sum.Batches)
		o.ObserveInt64(batchedOps, sum.BatchedOps)
		return nil
	}, held, waiters, sessions, batches, batchedOps)
	if err != nil {
		return nil, err
	}
	in.none = newNSAttrs(nil, !in.cfg.noSpans)
	return in, nil
}

// Hooks returns the hooks to give to advisory.WithHooks: Acquire, Released
// and Lost. (Contended, which changes what a Locker sends, is not set.)
func (in *Instrumentation) Hooks() advisory.Hooks {
	return advisory.Hooks{Acquire: in.acquire, Released: in.released, Lost: in.lost}
}

// Observe adds l's Stats to the gauges and the batch counters until stop
// is called; after that its batch counts stay in the counters, which never
// go down. A Locker may be observed by several Instrumentations, and stop
// may be called more than once.
func (in *Instrumentation) Observe(l *advisory.Locker) (stop func()) {
	w := &watched{l: l}
	in.watchM.Lock()
	in.locks = append(in.locks, w)
	in.watchM.Unlock()
	return func() {
		in.watchM.Lock()
		defer in.watchM.Unlock()
		if i := slices.Index(in.locks, w); i >= 0 {
			in.locks = slices.Delete(in.locks, i, i+1)
			st := l.Stats()
			in.retired.Batches += st.Batches
			in.retired.BatchedOps += st.BatchedOps
		}
	}
}

// Shutdown unregisters the gauges' callback. The hooks keep recording.
func (in *Instrumentation) Shutdown() error {
	in.regMu.Lock()
	defer in.regMu.Unlock()
	if in.reg == nil {
		return nil
	}
	err := in.reg.Unregister()
	in.reg = nil
	return err
}

// acquire is Hooks.Acquire.
func (in *Instrumentation) acquire(ctx context.Context, e advisory.AcquireEvent) {
	a := in.attrs(e.Key)
	mode := 0
	if e.Shared {
		mode = 1
	}
	in.wait.Record(ctx, e.Wait.Seconds(), a.wait[e.Outcome][mode][b2i(e.Try)][b2i(e.Queued)]...)
	if e.Queued {
		in.queueWait.Record(ctx, e.QueueWait.Seconds(), a.queue[e.Outcome][mode]...)
	}
	if e.HandedOver && e.Outcome == advisory.Acquired {
		in.handoffs.Add(ctx, 1, a.plain...)
	}
	if !in.cfg.noSpans {
		in.span(ctx, e, a, mode)
	}
}

// spanName is the name of the span of an acquire.
const spanName = "pgadvisory.acquire"

// clientKind is made once: made in each call, the option would allocate.
var clientKind = trace.WithSpanKind(trace.SpanKindClient)

// spanOptions holds the options of one span's Start and End, so that the
// two variadic lists take one allocation instead of two. Each call has its
// own: a TracerProvider may keep the options it is given.
type spanOptions struct {
	start [2]trace.SpanStartOption
	end   [1]trace.SpanEndOption
}

// span records the span of the acquire e, which ends now and started
// e.Wait ago. The attributes of an acquire of one key that did not queue
// are made once per combination (nsAttrs.span) and given as they are: the
// span copies them into its own slice. (Given at Start through
// trace.WithAttributes they would be copied twice, into the start
// configuration and then into the span.) A span that is not recording
// gets neither attributes nor an end time.
func (in *Instrumentation) span(ctx context.Context, e advisory.AcquireEvent, a *nsAttrs, mode int) {
	end := time.Now()
	o := &spanOptions{start: [2]trace.SpanStartOption{trace.WithTimestamp(end.Add(-e.Wait)), clientKind}}
	_, span := in.tracer.Start(ctx, spanName, o.start[:]...)
	if !span.IsRecording() {
		span.End()
		return
	}
	pre := a.span[e.Outcome][mode][b2i(e.Try)][b2i(e.HandedOver)]
	if e.Keys == 1 && !e.Queued && !in.cfg.withKey {
		span.SetAttributes(pre...)
	} else {
		// The same attributes in the same order, with queued, keys and
		// the queue wait of this call, and the key.
		attrs := make([]attribute.KeyValue, 0, len(pre)+2)
		attrs = append(attrs, pre[:spanQueued]...)
		attrs = append(attrs, AttrQueued.Bool(e.Queued), AttrKeys.Int(e.Keys))
		if e.Queued {
			attrs = append(attrs, AttrQueueWaitMS.Float64(float64(e.QueueWait)/float64(time.Millisecond)))
		}
		attrs = append(attrs, pre[spanKeys+1:]...)
		if in.cfg.withKey {
			attrs = append(attrs, AttrKey.String(e.Key.String()))
		}
		span.SetAttributes(attrs...)
	}
	if e.Outcome == advisory.Failed {
		span.RecordError(e.Err)
		span.SetStatus(codes.Error, e.Outcome.String())
	}
	o.end[0] = trace.WithTimestamp(end)
	span.End(o.end[:]...)
}

// released is Hooks.Released.
func (in *Instrumentation) released(key keyspace.Key, shared bool, held time.Duration) {
	in.hold.Record(context.Background(), held.Seconds(), in.attrs(key).hold[b2i(shared)]...)
}

// lost is Hooks.Lost.
func (in *Instrumentation) lost(key keyspace.Key, err error) {
	in.losses.Add(context.Background(), 1, in.attrs(key).loss[causeOf(err)]...)
}

// Causes of a loss, for pgadvisory.cause.
const (
	causePooler = iota
	causeKeepalive
	causeShutdown
	causeConnection
	causeOther
	nCauses
)

var causeName = [nCauses]string{"pooler", "keepalive_timeout", "server_shutdown", "connection", "other"}

// causeOf classifies the error of a loss.
func causeOf(err error) int {
	var se interface{ SQLState() string }
	var ne net.Error
	switch {
	case errors.Is(err, advisory.ErrPooler):
		return causePooler
	case errors.Is(err, context.DeadlineExceeded):
		return causeKeepalive
	case errors.As(err, &se) && strings.HasPrefix(se.SQLState(), "57P"):
		// admin_shutdown (pg_terminate_backend, a fast shutdown),
		// crash_shutdown, cannot_connect_now.
		return causeShutdown
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &ne):
		return causeConnection
	}
	return causeOther
}

var modeName = [2]string{"exclusive", "shared"}

const nOutcomes = int(advisory.Failed) + 1

// nsAttrs is every attribute set the hooks record with, for one namespace
// (or none), made once.
type nsAttrs struct {
	ns    string
	wait  [nOutcomes][2][2][2][]metric.RecordOption // outcome, mode, try, queued
	queue [nOutcomes][2][]metric.RecordOption       // outcome, mode
	hold  [2][]metric.RecordOption                  // mode
	loss  [nCauses][]metric.AddOption
	plain []metric.AddOption
	// span is the attributes of the span of an acquire of one key that
	// did not queue, by outcome, mode, try and handed over: outcome,
	// mode, try, queued, keys, then handed_over if true and the namespace
	// if any. Nil without spans.
	span [nOutcomes][2][2][2][]attribute.KeyValue
}

// Indexes in nsAttrs.span: an acquire that queued, or took several keys,
// replaces these two.
const (
	spanQueued = 3
	spanKeys   = 4
)

func newNSAttrs(ns *keyspace.Namespace, spans bool) *nsAttrs {
	a := &nsAttrs{}
	var base []attribute.KeyValue
	if ns != nil {
		a.ns = ns.Name()
		base = []attribute.KeyValue{AttrNamespace.String(a.ns)}
	}
	set := func(kv ...attribute.KeyValue) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(append(slices.Clone(base), kv...)...))
	}
	for o := range nOutcomes {
		out := AttrOutcome.String(advisory.Outcome(o).String())
		for m := range 2 {
			mode := AttrMode.String(modeName[m])
			for t := range 2 {
				for q := range 2 {
					a.wait[o][m][t][q] = []metric.RecordOption{set(out, mode, AttrTry.Bool(t == 1), AttrQueued.Bool(q == 1))}
				}
			}
			a.queue[o][m] = []metric.RecordOption{set(out, mode)}
		}
	}
	for m := range 2 {
		a.hold[m] = []metric.RecordOption{set(AttrMode.String(modeName[m]))}
	}
	for c := range nCauses {
		a.loss[c] = []metric.AddOption{set(AttrCause.String(causeName[c]))}
	}
	a.plain = []metric.AddOption{set()}
	if !spans {
		return a
	}
	for o := range nOutcomes {
		for m := range 2 {
			for t := range 2 {
				for h := range 2 {
					kv := []attribute.KeyValue{AttrOutcome.String(advisory.Outcome(o).String()), AttrMode.String(modeName[m]),
						AttrTry.Bool(t == 1), AttrQueued.Bool(false), AttrKeys.Int(1)}
					if h == 1 {
						kv = append(kv, AttrHandedOver.Bool(true))
					}
					a.span[o][m][t][h] = append(kv, base...)
				}
			}
		}
	}
	return a
}

// attrs returns the attribute sets for key: those of its namespace if it
// is a pair key of a namespace registered in the process, else those
// without a namespace. Registered namespaces are kept; others are looked
// up each time (keyspace.LookupNamespace, a mutex), so that the cache
// cannot grow with keys.
func (in *Instrumentation) attrs(key keyspace.Key) *nsAttrs {
	id, _, ok := key.Pair()
	if !ok {
		return in.none
	}
	if a, ok := in.byNS.Load(id); ok {
		return a.(*nsAttrs)
	}
	ns, ok := keyspace.LookupNamespace(id)
	if !ok {
		return in.none
	}
	in.nsMu.Lock()
	defer in.nsMu.Unlock()
	if a, ok := in.byNS.Load(id); ok {
		return a.(*nsAttrs)
	}
	a := newNSAttrs(&ns, !in.cfg.noSpans)
	in.byNS.Store(id, a)
	return a
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
