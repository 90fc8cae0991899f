package oteladvisory_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	oteladvisory "github.com/pgadvisory/pgadvisory/otel"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// ns is the namespace of the tests' keys.
var ns = keyspace.MustNamespace("oteladvisory-test", 1_700_000_041)

// randomID returns a namespace id for a key of the test's own.
func randomID() int32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return int32(uint32(b[0])<<23 | uint32(b[1])<<15 | uint32(b[2])<<7 | uint32(b[3])>>1)
}

// setup opens a fresh database with driver; admin is a lib/pq pool on it.
func setup(t *testing.T, driver string) (db, admin *sql.DB) {
	t.Helper()
	t.Cleanup(func() { testkit.VerifyNone(t) })
	dsn := itest.DSN(t)
	db = itest.OpenDSN(t, driver, dsn)
	admin = itest.OpenDSN(t, "postgres", dsn)
	t.Cleanup(func() {
		testkit.WaitNoAdvisoryLocks(t, admin)
		testkit.WaitConnsIdle(t, db)
	})
	return db, admin
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// point is one data point of a histogram or a sum, by its attributes.
type point struct {
	count   uint64  // histogram: count; sum: the value
	sum     float64 // histogram only
	buckets uint64  // histogram: the sum of its bucket counts
	min     float64
}

// collect reads every metric of the reader, by name and then by
// attributes ("k=v,k=v" in the order of the set).
func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]map[string]point {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]point{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			pts := map[string]point{}
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					p := point{count: dp.Count, sum: dp.Sum}
					for _, c := range dp.BucketCounts {
						p.buckets += c
					}
					if v, ok := dp.Min.Value(); ok {
						p.min = v
					}
					pts[attrs(dp.Attributes)] = p
				}
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					pts[attrs(dp.Attributes)] = point{count: uint64(dp.Value)}
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					pts[attrs(dp.Attributes)] = point{count: uint64(dp.Value)}
				}
			default:
				t.Fatalf("metric %s of type %T", m.Name, m.Data)
			}
			out[m.Name] = pts
		}
	}
	return out
}

// set is the attributes of parts ("k=v,k=v" each) as attrs prints them:
// sorted by key.
func set(parts ...string) string {
	var all []string
	for _, p := range parts {
		all = append(all, strings.Split(p, ",")...)
	}
	sort.Strings(all)
	return strings.Join(all, ",")
}

func attrs(s attribute.Set) string {
	var parts []string
	for _, kv := range s.ToSlice() {
		parts = append(parts, strings.TrimPrefix(string(kv.Key), "pgadvisory.")+"="+kv.Value.Emit())
	}
	return strings.Join(parts, ",")
}

// recorder keeps what the Acquire hook saw, to compare the histograms'
// sums with.
type recorder struct {
	mu   sync.Mutex
	wait map[string]float64 // outcome -> sum of the waits in seconds
	n    map[string]int
}

// TestMetrics runs a scripted scenario on the real server, with both
// drivers, and reads the recorded metrics back: every acquire outcome
// (acquired, busy in the process and on the server, timeout, cancelled
// in the process's queue, a handoff after a wait in the queue, a shared
// lock of a key without a namespace), two releases, a loss. The counts of
// each attribute set match the scenario, each histogram's bucket counts
// add up to its count, its sum is the sum of the waits the hook reported,
// the gauges show a lease held and a goroutine queued while they are, and
// every acquire has its span, a child of the caller's span.
func TestMetrics(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		db, admin := setup(t, driver)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		reader, mp := manualMeter(t)
		spans := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
		defer tp.Shutdown(context.Background())
		in, err := oteladvisory.New(oteladvisory.WithMeterProvider(mp), oteladvisory.WithTracerProvider(tp))
		if err != nil {
			t.Fatal(err)
		}
		defer in.Shutdown()
		rec := &recorder{wait: map[string]float64{}, n: map[string]int{}}
		hooks := in.Hooks()
		acquire := hooks.Acquire
		hooks.Acquire = func(ctx context.Context, e advisory.AcquireEvent) {
			rec.mu.Lock()
			rec.wait[e.Outcome.String()] += e.Wait.Seconds()
			rec.n[e.Outcome.String()]++
			rec.mu.Unlock()
			acquire(ctx, e)
		}
		l := advisory.New(db, advisory.WithHooks(hooks), advisory.WithHandoff(8, time.Hour), advisory.WithKeepAlive(100*time.Millisecond))
		other := advisory.New(db, advisory.WithHooks(hooks), advisory.WithLockTimeout(50*time.Millisecond))
		defer in.Observe(l)()
		defer in.Observe(other)()

		parent, top := tp.Tracer("test").Start(ctx, "scenario")
		key := ns.ID(randomID())
		bigint := keyspace.Int64(int64(randomID())<<20 | 1)

		// 1. acquired.
		first, err := l.Lock(parent, key)
		if err != nil {
			t.Fatal(err)
		}
		// 2. busy, refused in memory; 3. busy on the server, shared.
		if _, err := l.TryLock(parent, key); !errors.Is(err, advisory.ErrNotAcquired) {
			t.Fatalf("TryLock: %v", err)
		}
		if _, err := other.TryLockShared(parent, key); !errors.Is(err, advisory.ErrNotAcquired) {
			t.Fatalf("TryLockShared: %v", err)
		}
		// 4. timeout on the server.
		if _, err := other.Lock(parent, key); !errors.Is(err, advisory.ErrLockTimeout) {
			t.Fatalf("Lock with a lock timeout: %v", err)
		}
		// 5. cancelled in the queue after 30 ms.
		cctx, ccancel := context.WithTimeout(parent, 30*time.Millisecond)
		_, err = l.Lock(cctx, key)
		ccancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock with a deadline: %v", err)
		}
		// 6. queued, then handed the held lock.
		got := make(chan *advisory.Lease)
		go func() {
			ls, err := l.Lock(parent, key)
			if err != nil {
				t.Error(err)
			}
			got <- ls
		}()
		waitFor(t, "a goroutine in the queue", func() bool { return l.Stats().Queued == 1 })
		mid := collect(t, reader)
		if mid["pgadvisory.leases"][""].count != 1 || mid["pgadvisory.waiters"]["wait=queue"].count != 1 ||
			mid["pgadvisory.waiters"]["wait=server"].count != 0 || mid["pgadvisory.sessions"]["session=multiplexed"].count < 1 {
			t.Errorf("gauges with one lease held and one goroutine queued: %v %v %v",
				mid["pgadvisory.leases"], mid["pgadvisory.waiters"], mid["pgadvisory.sessions"])
		}
		time.Sleep(10 * time.Millisecond)
		if err := first.Release(ctx); err != nil {
			t.Fatal(err)
		}
		next := <-got
		time.Sleep(10 * time.Millisecond)
		if err := next.Release(ctx); err != nil {
			t.Fatal(err)
		}
		// 7. shared, a key without a namespace, held 20 ms.
		sh, err := l.LockShared(parent, bigint)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		if err := sh.Release(ctx); err != nil {
			t.Fatal(err)
		}
		// 8. acquired, then lost: the backend is terminated.
		lost, err := l.Lock(parent, key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.ExecContext(ctx, "SELECT pg_terminate_backend($1)", lost.PID()); err != nil {
			t.Fatal(err)
		}
		select {
		case <-lost.Lost():
		case <-ctx.Done():
			t.Fatal("the loss was not seen")
		}
		_ = lost.Release(ctx)
		top.End()

		// Lost is closed before the Lost hook runs: wait for its count.
		m := collect(t, reader)
		for deadline := time.Now().Add(5 * time.Second); len(m["pgadvisory.lease.losses"]) == 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
			m = collect(t, reader)
		}
		nsAttr := "namespace=" + ns.Name()
		wait := m["pgadvisory.acquire.duration"]
		want := map[string]uint64{
			set(nsAttr, "mode=exclusive,outcome=acquired,queued=false,try=false"): 2, // 1, 8
			set(nsAttr, "mode=exclusive,outcome=busy,queued=false,try=true"):      1, // 2
			set(nsAttr, "mode=shared,outcome=busy,queued=false,try=true"):         1, // 3
			set(nsAttr, "mode=exclusive,outcome=timeout,queued=false,try=false"):  1, // 4
			set(nsAttr, "mode=exclusive,outcome=cancelled,queued=true,try=false"): 1, // 5
			set(nsAttr, "mode=exclusive,outcome=acquired,queued=true,try=false"):  1, // 6
			"mode=shared,outcome=acquired,queued=false,try=false":                 1, // 7
		}
		checkCounts(t, "pgadvisory.acquire.duration", wait, want)
		sums := map[string]float64{}
		for a, p := range wait {
			for _, part := range strings.Split(a, ",") {
				if o, ok := strings.CutPrefix(part, "outcome="); ok {
					sums[o] += p.sum
				}
			}
		}
		rec.mu.Lock()
		for o, s := range rec.wait {
			if math.Abs(sums[o]-s) > 1e-9 {
				t.Errorf("%s: histogram sum %.9f s, the hook saw %.9f s", o, sums[o], s)
			}
		}
		rec.mu.Unlock()
		if p := wait[set(nsAttr, "mode=exclusive,outcome=timeout,queued=false,try=false")]; p.min < 0.045 {
			t.Errorf("the timeout waited %.3f s, want at least the 50 ms lock timeout", p.min)
		}
		if p := wait[set(nsAttr, "mode=exclusive,outcome=cancelled,queued=true,try=false")]; p.min < 0.025 {
			t.Errorf("the cancelled acquire waited %.3f s, want about 30 ms", p.min)
		}
		queue := m["pgadvisory.acquire.queue.duration"]
		checkCounts(t, "pgadvisory.acquire.queue.duration", queue, map[string]uint64{
			set(nsAttr, "mode=exclusive,outcome=cancelled"): 1,
			set(nsAttr, "mode=exclusive,outcome=acquired"):  1,
		})
		if p := queue[set(nsAttr, "mode=exclusive,outcome=acquired")]; p.sum < 0.009 {
			t.Errorf("queued for %.3f s before the handoff, want at least 10 ms", p.sum)
		}
		hold := m["pgadvisory.lease.duration"]
		checkCounts(t, "pgadvisory.lease.duration", hold, map[string]uint64{
			set(nsAttr, "mode=exclusive"): 2, // 1 (handed over), 6
			"mode=shared":                 1, // 7
		})
		if p := hold["mode=shared"]; p.sum < 0.019 {
			t.Errorf("the shared lease was held %.3f s, want at least 20 ms", p.sum)
		}
		checkCounts(t, "pgadvisory.handoffs", m["pgadvisory.handoffs"], map[string]uint64{nsAttr: 1})
		losses := m["pgadvisory.lease.losses"]
		if len(losses) != 1 {
			t.Errorf("losses %v, want one", losses)
		}
		for a, p := range losses {
			if p.count != 1 || !strings.Contains(a, "cause=server_shutdown") && !strings.Contains(a, "cause=connection") {
				t.Errorf("losses %v, want one by server_shutdown or connection", losses)
			}
			t.Logf("loss: %s", a)
		}

		// Spans: one per acquire, children of the scenario's span.
		var acq []sdktrace.ReadOnlySpan
		for _, s := range spans.Ended() {
			if s.Name() == "pgadvisory.acquire" {
				acq = append(acq, s)
			}
		}
		if len(acq) != 8 {
			t.Fatalf("%d acquire spans, want 8", len(acq))
		}
		var outcomes []string
		for _, s := range acq {
			if s.Parent().SpanID() != top.SpanContext().SpanID() {
				t.Errorf("span %v: parent %v, want the scenario's", s.Attributes(), s.Parent().SpanID())
			}
			var o, nsName string
			for _, kv := range s.Attributes() {
				switch kv.Key {
				case oteladvisory.AttrOutcome:
					o = kv.Value.AsString()
				case oteladvisory.AttrNamespace:
					nsName = kv.Value.AsString()
				}
			}
			outcomes = append(outcomes, o+"/"+nsName)
			if s.EndTime().Sub(s.StartTime()) <= 0 {
				t.Errorf("span %s lasted %v", o, s.EndTime().Sub(s.StartTime()))
			}
		}
		sort.Strings(outcomes)
		if w := "[acquired/ acquired/oteladvisory-test acquired/oteladvisory-test acquired/oteladvisory-test busy/oteladvisory-test busy/oteladvisory-test cancelled/oteladvisory-test timeout/oteladvisory-test]"; strings.Join(outcomes, " ") != strings.Trim(w, "[]") {
			t.Errorf("span outcomes %v\nwant %s", outcomes, w)
		}

		waitFor(t, "the gauges back to zero", func() bool {
			g := collect(t, reader)
			return g["pgadvisory.leases"][""].count == 0 && g["pgadvisory.waiters"]["wait=queue"].count == 0 &&
				g["pgadvisory.sessions"]["session=multiplexed"].count == 0 && g["pgadvisory.sessions"]["session=dedicated"].count == 0
		})
	})
}

// TestBatchCounters: pgadvisory.batches and pgadvisory.batch.operations
// count what the multiplexed sessions of the observed Lockers sent, as
// their Stats do, and keep a Locker's counts after its observation stops
// (a counter never goes down).
func TestBatchCounters(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		db, _ := setup(t, driver)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		reader, mp := manualMeter(t)
		in, err := oteladvisory.New(oteladvisory.WithMeterProvider(mp))
		if err != nil {
			t.Fatal(err)
		}
		defer in.Shutdown()
		l := advisory.New(db)
		stop := in.Observe(l)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 20 {
					ls, err := l.Lock(ctx, keyspace.Pair(randomID(), int32(g*100+i)))
					if err != nil {
						t.Error(err)
						return
					}
					if err := ls.Release(ctx); err != nil {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		st := l.Stats()
		if st.Batches == 0 || st.BatchedOps < 2*160 {
			t.Fatalf("Stats after 160 locks and releases: %d batches, %d operations", st.Batches, st.BatchedOps)
		}
		m := collect(t, reader)
		if b, o := m["pgadvisory.batches"][""].count, m["pgadvisory.batch.operations"][""].count; b != uint64(st.Batches) || o != uint64(st.BatchedOps) {
			t.Errorf("counters %d batches, %d operations; Stats %d, %d", b, o, st.Batches, st.BatchedOps)
		}
		stop()
		m = collect(t, reader)
		if b, o := m["pgadvisory.batches"][""].count, m["pgadvisory.batch.operations"][""].count; b != uint64(st.Batches) || o != uint64(st.BatchedOps) {
			t.Errorf("after stop: counters %d batches, %d operations, want %d, %d kept", b, o, st.Batches, st.BatchedOps)
		}
		t.Logf("%d batches carried %d operations (%.2f per batch)", st.Batches, st.BatchedOps, float64(st.BatchedOps)/float64(st.Batches))
	})
}

// manualMeter returns a MeterProvider whose metrics reader reads on
// demand (collect), shut down when the test ends.
func manualMeter(t *testing.T) (*sdkmetric.ManualReader, *sdkmetric.MeterProvider) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	return reader, mp
}

// checkCounts compares the count of each attribute set with want, and
// checks that a histogram's bucket counts add up to its count.
func checkCounts(t *testing.T, name string, got map[string]point, want map[string]uint64) {
	t.Helper()
	for a, p := range got {
		if p.buckets != 0 && p.buckets != p.count {
			t.Errorf("%s{%s}: buckets add up to %d, count %d", name, a, p.buckets, p.count)
		}
		if want[a] != p.count {
			t.Errorf("%s{%s}: %d, want %d", name, a, p.count, want[a])
		}
	}
	for a, n := range want {
		if _, ok := got[a]; !ok {
			t.Errorf("%s{%s}: missing, want %d", name, a, n)
		}
	}
}
