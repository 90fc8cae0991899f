package sqltext

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// TestSingleMatchesBuilders: the precomputed single-key statements are what
// the builders make, for every shape and extreme values: the same text and
// arguments in the Params style, and in the Inline style the same text with
// the values written in (the timeout as a '…'::text literal).
func TestSingleMatchesBuilders(t *testing.T) {
	keys := []keyspace.Key{
		keyspace.Int64(0), keyspace.Int64(-1), keyspace.Int64(math.MinInt64), keyspace.Int64(math.MaxInt64),
		keyspace.Pair(0, 0), keyspace.Pair(math.MinInt32, math.MaxInt32), keyspace.Pair(-7, 12),
	}
	type build func(Style, keyspace.Key, time.Duration) (string, []any)
	type pair struct {
		name        string
		fast, built build
	}
	var cases []pair
	for _, m := range []Mode{{}, {Shared: true}, {Try: true}, {Shared: true, Try: true}} {
		cases = append(cases,
			pair{"Lock", func(s Style, k keyspace.Key, d time.Duration) (string, []any) { return Lock(s, m, k, d) },
				func(s Style, k keyspace.Key, d time.Duration) (string, []any) { return buildLock(s, m, k, d) }},
			pair{"XactLock", func(s Style, k keyspace.Key, d time.Duration) (string, []any) { return XactLock(s, m, k, d) },
				func(s Style, k keyspace.Key, d time.Duration) (string, []any) { return buildXactLock(s, m, k, d) }},
			pair{"XactLockExec", func(s Style, k keyspace.Key, d time.Duration) (string, []any) {
				return XactLockExec(s, m, k, d)
			}, func(s Style, k keyspace.Key, d time.Duration) (string, []any) {
				return buildXactLockExec(s, m, k, d)
			}},
			pair{"LockExec", func(s Style, k keyspace.Key, d time.Duration) (string, []any) {
				return LockExec(s, m, k, d)
			}, func(s Style, k keyspace.Key, d time.Duration) (string, []any) {
				return buildLockExec(s, m, k, d)
			}},
			pair{"Unlock", func(s Style, k keyspace.Key, _ time.Duration) (string, []any) { return Unlock(s, m.Shared, k) },
				func(s Style, k keyspace.Key, _ time.Duration) (string, []any) { return buildUnlock(s, m.Shared, k) }},
			pair{"LockFenced", func(s Style, k keyspace.Key, d time.Duration) (string, []any) {
				return LockFenced(s, m, k, d, `"fence"`)
			}, func(s Style, k keyspace.Key, d time.Duration) (string, []any) {
				return buildLockFenced(s, m, k, d, `"fence"`)
			}})
	}
	for _, c := range cases {
		for _, k := range keys {
			for _, d := range []time.Duration{0, time.Microsecond, 1500 * time.Millisecond} {
				q, args := c.fast(Params, k, d)
				wq, wargs := c.built(Params, k, d)
				if q != wq || !reflect.DeepEqual(args, wargs) {
					t.Errorf("%s %v %v Params:\n got %s %v\nwant %s %v", c.name, k, d, q, args, wq, wargs)
				}
				q, args = c.fast(Inline, k, d)
				wq, _ = c.built(Inline, k, d)
				if d > 0 && c.name != "Unlock" {
					ms := "'" + millis(d) + "'"
					wq = strings.Replace(wq, ms, ms+"::text", 1)
				}
				if q != wq || args != nil {
					t.Errorf("%s %v %v Inline:\n got %s %v\nwant %s", c.name, k, d, q, args, wq)
				}
			}
		}
	}
}

// TestTemplateRefusesStrayDollar: a '$' that is not a placeholder of the
// statement's arguments is a bug in a builder, caught when the tables are
// built.
func TestTemplateRefusesStrayDollar(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	newTemplate("SELECT $1::int8, $$x$$", []any{int64(1)})
}

// BenchmarkLockText: building the hot statements allocates once.
func BenchmarkLockText(b *testing.B) {
	k := keyspace.Int64(4312917370057361399)
	for _, s := range []Style{Params, Inline} {
		b.Run([]string{"params", "inline"}[s], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Lock(s, Mode{}, k, 0)
				Unlock(s, false, k)
			}
		})
	}
}
