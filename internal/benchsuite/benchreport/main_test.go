package main

import (
	"strings"
	"testing"
)

const sample = `goos: linux
BenchmarkSessionLock/driver=pgx/conns=1/form=library-2     1000   100000 ns/op   3000 B/op   60 allocs/op
BenchmarkSessionLock/driver=pgx/conns=1/form=library-2     1000   120000 ns/op   3000 B/op   60 allocs/op
BenchmarkSessionLock/driver=pgx/conns=1/form=library-2     1000   500000 ns/op   3000 B/op   60 allocs/op
BenchmarkSessionLock/driver=pgx/conns=1/form=raw-params-2  1000   110000 ns/op   1000 B/op   20 allocs/op
BenchmarkSessionLock/driver=pgx/conns=1/form=raw-inline-2  1000   300000 ns/op   1000 B/op   20 allocs/op
BenchmarkHotKey/driver=pgx/form=raw-2                      2000   50000 ns/op   64 conns   63 waiting-conns  100 B/op  1 allocs/op
BenchmarkHotKey/driver=pgx/form=library-nohandoff-2           2000   20000 ns/op   1 conns   1 waiting-conns  100 B/op  1 allocs/op
BenchmarkHotKey/driver=pgx/form=library-2                     2000   20000 ns/op   4 conns   3 waiting-conns  100 B/op  1 allocs/op
--- FAIL: BenchmarkManyLocks/driver=pgx/form=library
BenchmarkFencing/driver=postgres/conns=1/form=library-2          2000   400000 ns/op
BenchmarkSessionLockPaired/driver=pgx/conns=8-2  1000  80000 ns/op  170000 library-ns/op  0.96 ratio  163200 raw-ns/op
BenchmarkSessionLockPaired/driver=pgx/conns=8-2  1000  80000 ns/op  170000 library-ns/op  0.90 ratio  153000 raw-ns/op
BenchmarkSessionLockPaired/driver=pgx/conns=8-2  1000  80000 ns/op  170000 library-ns/op  0.97 ratio  164900 raw-ns/op
BenchmarkFencing/driver=postgres/conns=1/form=library-nofence-2  2000   300000 ns/op
BenchmarkPairedCalibration/driver=pgx/conns=8/pair=raw-2  1000  80000 ns/op  160000 a-ns/op  0.99 ratio  158400 b-ns/op
BenchmarkPairedCalibration/driver=pgx/conns=8/pair=raw-2  1000  80000 ns/op  160000 a-ns/op  0.98 ratio  156800 b-ns/op
BenchmarkPairedCalibration/driver=pgx/conns=8/pair=raw-2  1000  80000 ns/op  160000 a-ns/op  1.02 ratio  163200 b-ns/op
BenchmarkPairedCalibration/driver=pgx/conns=8/pair=pooled-2  1000  80000 ns/op  170000 a-ns/op  0.95 ratio  161500 b-ns/op
BenchmarkFencing/driver=pgx/conns=8/form=library-2               2000   125000 ns/op
BenchmarkFencing/driver=pgx/conns=8/form=library-nofence-2       2000   100000 ns/op
`

func TestReport(t *testing.T) {
	r, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := r.median("BenchmarkSessionLock/driver=pgx/conns=1/form=library", "ns/op"); m != 120000 {
		t.Errorf("median %v, want 120000", m)
	}
	base, _ := r.best("BenchmarkSessionLock/driver=pgx/conns=1/form=raw-params", "BenchmarkSessionLock/driver=pgx/conns=1/form=raw-inline")
	if !strings.HasSuffix(base, "raw-params") {
		t.Errorf("best %q, want raw-params", base)
	}
	var sb strings.Builder
	report(&sb, r)
	out := sb.String()
	for _, want := range []string{
		"| uncontended ≥ 0.95× best raw, separate runs | pgx | 1 conns | 120.0 µs | 110.0 µs (raw-params) | 0.92× (rounds 1.10–1.10) | ≥ 0.95 | informational: the paired row decides |",
		"| hot key ≥ 2× raw, ≤ 2 conns waiting | pgx | library (4 conns, 3 waiting) | 20.0 µs | 50.0 µs (raw) | 2.50× | ≥ 2, ≤ 2 | **not met** |",
		"| hot key ≥ 2× raw, ≤ 2 conns waiting | pgx | library-nohandoff (1 conns, 1 waiting) | 20.0 µs | 50.0 µs (raw) | 2.50× | ≥ 2, ≤ 2 | reference (the in-process queue alone, WithHandoff(0, 0)) |",
		"| 10,000 locks over ≤ 4 conns | pgx | library | failed |",
		"| fencing ≥ 0.8× without | postgres | 1 conns | 400.0 µs | 300.0 µs (library-nofence) | 0.75× | ≥ 0.8 | **not met** |",
		"| fencing ≥ 0.8× without | pgx | 8 conns | 125.0 µs | 100.0 µs (library-nofence) | 0.80× | ≥ 0.8 | met |",
		"| fencing ≥ 0.8× without | pgx | 1 conns | – | – | – | ≥ 0.8 | not measured |",
		"| uncontended ≥ 0.95× best raw, paired | pgx | 8 conns | 170.0 µs | 163.2 µs (raw-params) | 0.96× (samples 0.90–0.97) | ≥ 0.95 | met |",
		"| paired harness, raw-params against itself | pgx | 8 conns | 160.0 µs | 158.4 µs (raw-params) | 0.99× (samples 0.98–1.02) | 1 | reference (calibration) |",
		"| paired harness, raw-params on a pooled connection per lock against raw-params | pgx | 8 conns | 170.0 µs | 161.5 µs (raw-params) | 0.95× (samples 0.95–0.95) | 1 | reference (what a connection per lock costs) |",
		"| uncontended ≥ 0.95× best raw, paired | postgres | 1 conns | – | – | – | ≥ 0.95 | not measured |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
