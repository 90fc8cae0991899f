// Command benchreport reads the output of the benchsuite benchmarks (go test
// -bench, any number of -count runs, several files concatenated) and writes
// Markdown tables of the ratios between the library and the best raw
// database/sql form of the same run, per driver, against the goals of issue
// 8 (and issue 11's: lock+unlock with a fencing token against without),
// each marked met or not met. It is run by scripts/bench.sh.
//
// Ratios are throughput ratios computed from medians: baseline ns/op divided
// by library ns/op, so above 1 means the library is faster.
//
//	go run ./internal/benchsuite/benchreport bench.txt > ratios.md
package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// results holds every sample by benchmark name (without the -GOMAXPROCS
// suffix) and unit.
type results struct {
	samples map[string]map[string][]float64
	failed  map[string]bool
}

var procSuffix = regexp.MustCompile(`-\d+$`)

func parse(r io.Reader) (*results, error) {
	res := &results{samples: map[string]map[string][]float64{}, failed: map[string]bool{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if name, ok := strings.CutPrefix(line, "--- FAIL: "); ok {
			res.failed[strings.Fields(name)[0]] = true
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := procSuffix.ReplaceAllString(f[0], "")
		m := res.samples[name]
		if m == nil {
			m = map[string][]float64{}
			res.samples[name] = m
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			m[f[i+1]] = append(m[f[i+1]], v)
		}
	}
	return res, sc.Err()
}

// median returns the median of name's samples in unit, and false if there
// are none.
func (r *results) median(name, unit string) (float64, bool) {
	v := slices.Clone(r.samples[name][unit])
	if len(v) == 0 {
		return 0, false
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

// spread returns the lowest and the highest sample of unit for name.
func (r *results) spread(name, unit string) (lo, hi float64) {
	v := r.samples[name][unit]
	if len(v) == 0 {
		return 0, 0
	}
	return slices.Min(v), slices.Max(v)
}

// roundSpread returns the lowest and the highest ratio base ns/op ÷ lib
// ns/op over the rounds of a run: the k-th sample of each comes from the
// k-th round (bench.sh runs each form once per round).
func (r *results) roundSpread(lib, base string) (lo, hi float64) {
	l, b := r.samples[lib]["ns/op"], r.samples[base]["ns/op"]
	lo, hi = math.Inf(1), math.Inf(-1)
	for k := range min(len(l), len(b)) {
		if l[k] > 0 {
			lo, hi = min(lo, b[k]/l[k]), max(hi, b[k]/l[k])
		}
	}
	if math.IsInf(lo, 1) {
		return 0, 0
	}
	return lo, hi
}

// n returns how many samples of ns/op name has.
func (r *results) n(name string) int { return len(r.samples[name]["ns/op"]) }

// ratio is baseline ns/op over library ns/op.
func (r *results) ratio(lib, base string) (float64, bool) {
	l, ok1 := r.median(lib, "ns/op")
	b, ok2 := r.median(base, "ns/op")
	if !ok1 || !ok2 || l == 0 {
		return 0, false
	}
	return b / l, true
}

// best returns the name among names with the lowest median ns/op.
func (r *results) best(names ...string) (string, bool) {
	bestName, bestV := "", math.Inf(1)
	for _, n := range names {
		if v, ok := r.median(n, "ns/op"); ok && v < bestV {
			bestName, bestV = n, v
		}
	}
	return bestName, bestName != ""
}

var drivers = []string{"postgres", "pgx"}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func us(ns float64) string { return strconv.FormatFloat(ns/1000, 'f', 1, 64) + " µs" }

// pairedRaw is the raw form BenchmarkSessionLockPaired runs for a driver.
func pairedRaw(driver string) string {
	if driver == "postgres" {
		return "raw-inline"
	}
	return "raw-params"
}

func form(name string) string {
	_, f, _ := strings.Cut(name, "form=")
	return f
}

func main() {
	var in io.Reader = os.Stdin
	if len(os.Args) > 1 {
		var rs []io.Reader
		for _, p := range os.Args[1:] {
			f, err := os.Open(p)
			if err != nil {
				fmt.Fprintln(os.Stderr, "benchreport:", err)
				os.Exit(1)
			}
			defer f.Close()
			rs = append(rs, f)
		}
		in = io.MultiReader(rs...)
	}
	res, err := parse(in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	report(w, res)
}

func report(w io.Writer, r *results) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }

	p("## Goals\n\n")
	p("Ratios are throughput ratios of medians (baseline ns/op ÷ library ns/op; above 1 means the library is faster), from one run of the suite. ")
	p("The rows marked paired come from BenchmarkSessionLockPaired, which runs the library and the raw form alternately in one loop, so that both share the machine's drifting load, the raw form moving every 63 pairs to the connection the library used last, so that both take turns on the same backends: their ratio is the median of the per-sample ratios, and the times are per lock+unlock of each goroutine. The calibration rows run the raw form against itself through the same harness: their distance from 1 is the harness's own error; the rows below them run the raw form on a pooled connection per lock, as a lease does, against the raw form: what taking a connection from the pool for each lock costs, whoever takes it. ")
	p("The uncontended goal is decided by the paired rows: the separate runs of each form (BenchmarkSessionLock), one after the other in each round, vary from round to round by far more than the 5%% the goal leaves (their per-round ratios are shown), while the paired calibration stays within a few percent of 1.\n\n")
	p("| Goal | Driver | Case | Library | Baseline | Ratio | Target | Verdict |\n")
	p("|---|---|---|---|---|---|---|---|\n")

	// Uncontended lock+unlock: library vs the best raw form.
	for _, d := range drivers {
		for _, c := range []int{1, 8} {
			pre := fmt.Sprintf("BenchmarkSessionLock/driver=%s/conns=%d/form=", d, c)
			lib := pre + "library"
			base, ok := r.best(pre+"raw-params", pre+"raw-inline")
			ratio, ok2 := r.ratio(lib, base)
			if !ok || !ok2 {
				p("| uncontended ≥ 0.95× best raw, separate runs | %s | %d conns | – | – | – | ≥ 0.95 | not measured |\n", d, c)
				continue
			}
			lv, _ := r.median(lib, "ns/op")
			bv, _ := r.median(base, "ns/op")
			lo, hi := r.roundSpread(lib, base)
			p("| uncontended ≥ 0.95× best raw, separate runs | %s | %d conns | %s | %s (%s) | %.2f× (rounds %.2f–%.2f) | ≥ 0.95 | informational: the paired row decides |\n",
				d, c, us(lv), us(bv), form(base), ratio, lo, hi)
		}
	}
	// The same, measured as pairs in one loop (BenchmarkSessionLockPaired):
	// the median of the per-sample ratios.
	for _, d := range drivers {
		for _, c := range []int{1, 8} {
			name := fmt.Sprintf("BenchmarkSessionLockPaired/driver=%s/conns=%d", d, c)
			ratio, ok := r.median(name, "ratio")
			lv, _ := r.median(name, "library-ns/op")
			bv, _ := r.median(name, "raw-ns/op")
			if !ok {
				p("| uncontended ≥ 0.95× best raw, paired | %s | %d conns | – | – | – | ≥ 0.95 | not measured |\n", d, c)
				continue
			}
			lo, hi := r.spread(name, "ratio")
			p("| uncontended ≥ 0.95× best raw, paired | %s | %d conns | %s | %s (%s) | %.2f× (samples %.2f–%.2f) | ≥ 0.95 | %s |\n",
				d, c, us(lv), us(bv), pairedRaw(d), ratio, lo, hi, verdict(ratio >= 0.95))
		}
	}
	// The paired harness against itself (BenchmarkPairedCalibration): how
	// far from 1 it puts two identical forms, to read the paired rows by.
	for _, d := range drivers {
		for _, c := range []int{1, 8} {
			for _, pair := range []string{"raw", "pooled"} {
				name := fmt.Sprintf("BenchmarkPairedCalibration/driver=%s/conns=%d/pair=%s", d, c, pair)
				ratio, ok := r.median(name, "ratio")
				if !ok {
					continue
				}
				lo, hi := r.spread(name, "ratio")
				av, _ := r.median(name, "a-ns/op")
				bv, _ := r.median(name, "b-ns/op")
				what, label := pairedRaw(d)+" against itself", "reference (calibration)"
				if pair == "pooled" {
					what, label = pairedRaw(d)+" on a pooled connection per lock against "+pairedRaw(d), "reference (what a connection per lock costs)"
				}
				p("| paired harness, %s | %s | %d conns | %s | %s (%s) | %.2f× (samples %.2f–%.2f) | 1 | %s |\n",
					what, d, c, us(av), us(bv), pairedRaw(d), ratio, lo, hi, label)
			}
		}
	}
	// lib/pq: library vs the naive $1 form.
	for _, c := range []int{1, 8} {
		pre := fmt.Sprintf("BenchmarkSessionLock/driver=postgres/conns=%d/form=", c)
		ratio, ok := r.ratio(pre+"library", pre+"raw-params")
		if !ok {
			p("| lib/pq ≥ 1.5× naive `$1` | postgres | %d conns | – | – | – | ≥ 1.5 | not measured |\n", c)
			continue
		}
		lv, _ := r.median(pre+"library", "ns/op")
		bv, _ := r.median(pre+"raw-params", "ns/op")
		p("| lib/pq ≥ 1.5× naive `$1` | postgres | %d conns | %s | %s (raw-params) | %.2f× | ≥ 1.5 | %s |\n",
			c, us(lv), us(bv), ratio, verdict(ratio >= 1.5))
	}
	// Hot key.
	for _, d := range drivers {
		pre := fmt.Sprintf("BenchmarkHotKey/driver=%s/form=", d)
		for _, f := range []string{"library", "library-nohandoff"} {
			ratio, ok := r.ratio(pre+f, pre+"raw")
			if !ok {
				p("| hot key ≥ 2× raw, ≤ 2 conns waiting | %s | %s | – | – | – | ≥ 2 | not measured |\n", d, f)
				continue
			}
			lv, _ := r.median(pre+f, "ns/op")
			bv, _ := r.median(pre+"raw", "ns/op")
			wc, _ := r.median(pre+f, "waiting-conns")
			cc, _ := r.median(pre+f, "conns")
			label := verdict(ratio >= 2 && wc <= 2)
			if f != "library" {
				// The queue alone, without the handoff that the library does
				// by default: what the handoff adds, not a form of the goal.
				label = "reference (the in-process queue alone, WithHandoff(0, 0))"
			}
			p("| hot key ≥ 2× raw, ≤ 2 conns waiting | %s | %s (%g conns, %g waiting) | %s | %s (raw) | %.2f× | ≥ 2, ≤ 2 | %s |\n",
				d, f, cc, wc, us(lv), us(bv), ratio, label)
		}
	}
	// 10,000 locks.
	for _, d := range drivers {
		pre := fmt.Sprintf("BenchmarkManyLocks/driver=%s/form=", d)
		for _, f := range []string{"library", "library-4conns", "proposal-unlockmany"} {
			name := pre + f
			if r.failed[name] {
				p("| 10,000 locks over ≤ 4 conns | %s | %s | failed | – | – | ≤ 4 conns | **not met** (see the log) |\n", d, f)
				continue
			}
			lv, ok := r.median(name, "ns/op")
			if !ok {
				p("| 10,000 locks over ≤ 4 conns | %s | %s | – | – | – | ≤ 4 conns | not measured |\n", d, f)
				continue
			}
			allocs, _ := r.median(name, "allocs/op")
			cc, _ := r.median(name, "conns")
			ratio, _ := r.ratio(name, pre+"raw-array")
			bv, _ := r.median(pre+"raw-array", "ns/op")
			label := verdict(cc <= 4)
			if strings.HasPrefix(f, "proposal") {
				label = "reference (the library's statements on one pinned connection)"
			}
			p("| 10,000 locks over ≤ 4 conns | %s | %s (%g conns, %g allocs/op) | %.1f ms | %.1f ms (raw-array) | %.2f× | ≤ 4 conns | %s |\n",
				d, f, cc, allocs, lv/1e6, bv/1e6, ratio, label)
		}
	}
	// Fencing (issue 11): lock+unlock with a token against the same Locker
	// without fencing, on a durable server.
	for _, d := range drivers {
		for _, c := range []int{1, 8} {
			pre := fmt.Sprintf("BenchmarkFencing/driver=%s/conns=%d/form=", d, c)
			ratio, ok := r.ratio(pre+"library", pre+"library-nofence")
			if !ok {
				p("| fencing ≥ 0.8× without | %s | %d conns | – | – | – | ≥ 0.8 | not measured |\n", d, c)
				continue
			}
			lv, _ := r.median(pre+"library", "ns/op")
			bv, _ := r.median(pre+"library-nofence", "ns/op")
			p("| fencing ≥ 0.8× without | %s | %d conns | %s | %s (library-nofence) | %.2f× | ≥ 0.8 | %s |\n",
				d, c, us(lv), us(bv), ratio, verdict(ratio >= 0.8))
		}
	}
	// Middleware.
	for _, d := range drivers {
		pre := fmt.Sprintf("BenchmarkMiddleware/driver=%s/form=", d)
		bareB, okB := r.median(pre+"bare", "B/op")
		for _, f := range []string{"library-lock", "library-lock-wait", "library-txlock"} {
			st, ok := r.median(pre+f, "stmts/op")
			b, ok2 := r.median(pre+f, "B/op")
			if !ok || !ok2 || !okB {
				p("| middleware ≤ 1 lock + 1 unlock, < 2 KB | %s | %s | – | – | – | – | not measured |\n", d, f)
				continue
			}
			added := b - bareB
			lockStmts := st
			if f == "library-txlock" {
				lockStmts = st - 2 // BEGIN and COMMIT belong to the handler's transaction
			}
			p("| middleware ≤ 1 lock + 1 unlock, < 2 KB | %s | %s | %g stmts/req, +%.0f B/req | bare %.0f B/req | – | ≤ 2 lock stmts, < 2048 B | %s |\n",
				d, f, st, added, bareB, verdict(lockStmts <= 2 && added < 2048))
		}
	}

	p("\n## Other cases (library vs best raw form, informational)\n\n")
	p("| Benchmark | Driver | Library | Best raw | Ratio | Samples |\n|---|---|---|---|---|---|\n")
	for _, d := range drivers {
		for _, c := range []int{1, 8} {
			pre := fmt.Sprintf("BenchmarkSessionLock/driver=%s/conns=%d/form=", d, c)
			ratio, ok := r.ratio(pre+"library", pre+"raw-deadline")
			if !ok {
				continue
			}
			lv, _ := r.median(pre+"library", "ns/op")
			bv, _ := r.median(pre+"raw-deadline", "ns/op")
			p("| SessionLock vs raw under a deadline (%d conns) | %s | %s | %s (raw-deadline) | %.2f× | %d |\n", c, d, us(lv), us(bv), ratio, r.n(pre+"library"))
			if ratio, ok := r.ratio(pre+"library", pre+"raw-pooled"); ok {
				bv, _ := r.median(pre+"raw-pooled", "ns/op")
				p("| SessionLock vs raw on a pooled connection per lock (%d conns) | %s | %s | %s (raw-pooled) | %.2f× | %d |\n", c, d, us(lv), us(bv), ratio, r.n(pre+"library"))
			}
		}
	}
	for _, fam := range []string{"TryLock", "LockAll"} {
		for _, d := range drivers {
			pre := fmt.Sprintf("Benchmark%s/driver=%s/conns=8/form=", fam, d)
			base, ok := r.best(pre+"raw-params", pre+"raw-inline")
			ratio, ok2 := r.ratio(pre+"library", base)
			if !ok || !ok2 {
				continue
			}
			lv, _ := r.median(pre+"library", "ns/op")
			bv, _ := r.median(base, "ns/op")
			p("| %s (8 conns) | %s | %s | %s (%s) | %.2f× | %d |\n", fam, d, us(lv), us(bv), form(base), ratio, r.n(pre+"library"))
		}
	}
	for _, d := range drivers {
		pre := fmt.Sprintf("BenchmarkXactLock/driver=%s/conns=8/form=", d)
		base, ok := r.best(pre+"raw-params", pre+"raw-inline")
		if !ok {
			continue
		}
		bv, _ := r.median(base, "ns/op")
		for _, f := range []string{"library", "library-driver"} {
			ratio, ok := r.ratio(pre+f, base)
			if !ok {
				continue
			}
			lv, _ := r.median(pre+f, "ns/op")
			p("| XactLock %s (8 conns) | %s | %s | %s (%s) | %.2f× | %d |\n", f, d, us(lv), us(bv), form(base), ratio, r.n(pre+f))
		}
	}

	overhead := false
	for _, d := range drivers {
		for _, c := range []int{1, 8} {
			pre := fmt.Sprintf("BenchmarkOverhead/driver=%s/conns=%d/form=", d, c)
			base, ok := r.best(pre+"raw-params", pre+"raw-inline")
			lv, ok2 := r.median(pre+"library", "ns/op")
			if !ok || !ok2 {
				continue
			}
			if !overhead {
				overhead = true
				p("\n## Client work per lock+unlock, without a server (BenchmarkOverhead, informational)\n\n")
				p("| Driver | Goroutines | Library | Raw | Raw, pooled connection | Library − raw | Library − raw pooled | Library allocs | Raw allocs |\n|---|---|---|---|---|---|---|---|---|\n")
			}
			bv, _ := r.median(base, "ns/op")
			pv, _ := r.median(pre+"raw-pooled", "ns/op")
			la, _ := r.median(pre+"library", "allocs/op")
			ba, _ := r.median(base, "allocs/op")
			p("| %s | %d | %.0f ns | %.0f ns (%s) | %.0f ns | %+.0f ns | %+.0f ns | %.0f | %.0f |\n", d, c, lv, bv, form(base), pv, lv-bv, lv-pv, la, ba)
		}
	}

	p("\n## Medians of every benchmark\n\n| Benchmark | ns/op | B/op | allocs/op | other | samples |\n|---|---|---|---|---|---|\n")
	names := make([]string, 0, len(r.samples))
	for n := range r.samples {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		ns, _ := r.median(n, "ns/op")
		b, _ := r.median(n, "B/op")
		a, _ := r.median(n, "allocs/op")
		var other []string
		units := make([]string, 0)
		for u := range r.samples[n] {
			if u != "ns/op" && u != "B/op" && u != "allocs/op" {
				units = append(units, u)
			}
		}
		slices.Sort(units)
		for _, u := range units {
			v, _ := r.median(n, u)
			other = append(other, fmt.Sprintf("%g %s", v, u))
		}
		p("| %s | %.0f | %.0f | %.0f | %s | %d |\n", strings.TrimPrefix(n, "Benchmark"), ns, b, a, strings.Join(other, ", "), r.n(n))
	}
	if len(r.failed) > 0 {
		var fails []string
		for n := range r.failed {
			if strings.Count(n, "/") >= 2 { // the leaves; parents fail with them
				fails = append(fails, n)
			}
		}
		slices.Sort(fails)
		p("\nFailed benchmarks: %s\n", strings.Join(fails, ", "))
	}
}
