package oteladvisory_test

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	oteladvisory "github.com/pgadvisory/pgadvisory/otel"
)

// Metrics of a Locker, exported with the stdout exporter. The exporter's
// encoder here prints, for each histogram and counter, its attributes and
// its count (the default encoder prints everything as JSON, with times and
// durations that differ from run to run).
func Example() {
	db, done := exampleDB()
	defer done()
	ctx := context.Background()

	exp, err := stdoutmetric.New(stdoutmetric.WithEncoder(counts{}))
	if err != nil {
		panic(err)
	}
	reader := sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	inst, err := oteladvisory.New(oteladvisory.WithMeterProvider(mp))
	if err != nil {
		panic(err)
	}
	l := advisory.New(db, advisory.WithHooks(inst.Hooks()))
	stop := inst.Observe(l)
	defer stop()

	reports := keyspace.MustNamespace("reports", 11)
	lease, err := l.Lock(ctx, reports.ID(2026))
	if err != nil {
		panic(err)
	}
	if _, err := l.TryLock(ctx, reports.ID(2026)); err != nil {
		fmt.Println("second try:", err)
	}
	if err := lease.Release(ctx); err != nil {
		panic(err)
	}
	if err := mp.Shutdown(ctx); err != nil { // exports what was recorded
		panic(err)
	}
	// Output:
	// second try: advisory: lock (11,2026): held by another lease of this process, not acquired
	// pgadvisory.acquire.duration {mode=exclusive namespace=reports outcome=acquired queued=false try=false} 1
	// pgadvisory.acquire.duration {mode=exclusive namespace=reports outcome=busy queued=false try=true} 1
	// pgadvisory.batch.operations {} 2
	// pgadvisory.batches {} 2
	// pgadvisory.lease.duration {mode=exclusive namespace=reports} 1
	// pgadvisory.leases {} 0
	// pgadvisory.waiters {wait=queue} 0
	// pgadvisory.waiters {wait=server} 0
}

// counts is a stdoutmetric.Encoder that prints one line per data point:
// the metric, its attributes, and its count (histograms) or value.
type counts struct{}

func (counts) Encode(v any) error {
	rm, ok := v.(*metricdata.ResourceMetrics)
	if !ok {
		return fmt.Errorf("unexpected %T", v)
	}
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "pgadvisory.sessions" {
				continue // a session lingers for about a second after its last lease: not the same every run
			}
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					lines = append(lines, fmt.Sprintf("%s {%s} %d", m.Name, attrList(dp.Attributes.ToSlice()), dp.Count))
				}
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					lines = append(lines, fmt.Sprintf("%s {%s} %d", m.Name, attrList(dp.Attributes.ToSlice()), dp.Value))
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					lines = append(lines, fmt.Sprintf("%s {%s} %d", m.Name, attrList(dp.Attributes.ToSlice()), dp.Value))
				}
			}
		}
	}
	sort.Strings(lines)
	fmt.Println(strings.Join(lines, "\n"))
	return nil
}

// attrList prints attributes as k=v without the pgadvisory. prefix.
func attrList(kvs []attribute.KeyValue) string {
	parts := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		parts = append(parts, strings.TrimPrefix(string(kv.Key), "pgadvisory.")+"="+kv.Value.Emit())
	}
	return strings.Join(parts, " ")
}

// exampleDB gives an example a fresh database on the test server (the one
// in PGADVISORY_TEST_DSN, else one that itest starts) and a function that
// removes it. In your code, db is your application's *sql.DB.
func exampleDB() (*sql.DB, func()) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv, err := itest.Start(ctx, itest.Config{})
	if err != nil {
		panic(err)
	}
	admin, err := sql.Open("pgx", srv.DSN(""))
	if err != nil {
		panic(err)
	}
	name := fmt.Sprintf("example_otel_%d", time.Now().UnixNano())
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		panic(err)
	}
	db, err := sql.Open("pgx", srv.DSN(name))
	if err != nil {
		panic(err)
	}
	return db, func() {
		db.Close()
		_, _ = admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		admin.Close()
		srv.Close()
	}
}
