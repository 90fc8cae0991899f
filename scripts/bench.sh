#!/usr/bin/env bash
# bench.sh runs the benchmark suite (internal/benchsuite) against a real
# PostgreSQL, compares the library with the best raw database/sql form of the
# same run per driver, and writes BENCHMARKS.md at the root of the module.
#
# Usage:
#   PGADVISORY_TEST_DSN='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable' scripts/bench.sh
#
# Without PGADVISORY_TEST_DSN, itest starts a server (Docker, else local
# binaries). BenchmarkManyLocks always starts a private server of its own
# (it needs max_locks_per_transaction raised), and so does BenchmarkFencing
# (it needs fsync and synchronous_commit on, which itest's servers turn off).
#
# Settings (environment):
#   BENCH_COUNT   samples per benchmark (default 6: benchstat gives a 95%
#                 confidence interval from 6 samples on)
#   BENCH_QUICK=1 one sample and short runs, to check that everything works
#   BENCH_OUT     directory for the raw output (default: a new temp dir)
#   BENCH_MD      the Markdown file to write (default: BENCHMARKS.md)
#   BENCH_REPORT_ONLY=1  run nothing: rewrite the Markdown from
#                 $BENCH_OUT/bench.txt of an earlier run
#
# The whole run takes about 6 minutes on a quiet 2-core machine, 20 or more
# when other work loads it.
set -u -o pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

count=${BENCH_COUNT:-6}
scale=1
if [ "${BENCH_QUICK:-}" = 1 ]; then
	count=1
	scale=5
fi
out=${BENCH_OUT:-$(mktemp -d -t pgadvisory-bench.XXXXXX)}
md=${BENCH_MD:-$root/BENCHMARKS.md}
mkdir -p "$out"
raw="$out/bench.txt"
report_only=${BENCH_REPORT_ONLY:-}
if [ -n "$report_only" ] && [ ! -s "$raw" ]; then
	echo "bench.sh: BENCH_REPORT_ONLY needs $raw from an earlier run" >&2
	exit 1
fi
[ -n "$report_only" ] || : >"$raw"

load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
# cpu_ticks prints the CPU time of all CPUs so far and its part stolen by
# the hypervisor (/proc/stat, in clock ticks): on a virtual machine, other
# guests of the host take CPU from this one, and figures of a run with much
# stolen time are slower and noisier.
cpu_ticks() {
	awk '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9; exit}' /proc/stat 2>/dev/null || echo "0 0"
}
read -r ticks_before steal_before < <(cpu_ticks)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t0=$(date +%s)
if [ -n "$report_only" ]; then
	# Keep what the run recorded about itself.
	[ -f "$out/meta" ] && . "$out/meta"
else
	echo "bench.sh: building the suite" >&2
	go test -c -o "$out/benchsuite.test" ./internal/benchsuite || exit 1
fi

# run PATTERN BENCHTIME COUNT: one group of benchmarks, appended to $raw.
# Failures are recorded in the output (--- FAIL lines) and reported, not
# fatal: a goal the library cannot reach yet is a result too.
commands=()
run() {
	local pattern=$1 benchtime=$2 n=$3
	if [ "$scale" != 1 ] && [[ $benchtime == *x ]]; then
		benchtime=$(( ${benchtime%x} / scale + 1 ))x
	fi
	local cmd="benchsuite.test -test.run '^\$' -test.bench '$pattern' -test.benchtime $benchtime -test.count $n -test.benchmem"
	case " ${commands[*]:-} " in *"$cmd"*) ;; *) commands+=("$cmd") ;; esac
	[ -n "$report_only" ] && return
	echo "bench.sh: $cmd" >&2
	(cd internal/benchsuite && "$out/benchsuite.test" -test.run '^$' -test.bench "$pattern" \
		-test.benchtime "$benchtime" -test.count "$n" -test.benchmem) 2>&1 | tee -a "$raw" >&2
}

# Rounds of one sample each rather than -count: on a shared machine the load
# drifts, and interleaving keeps every form of a case exposed to the same
# drift (with -count, the samples of one form run back to back).
for round in $(seq "$count"); do
	# At 8 connections an operation takes a fifth of the time it takes at
	# 1: longer samples there, so that each lasts a few hundred ms.
	run '^Benchmark(SessionLock|SessionLockPaired|PairedCalibration)$/./conns=1' 5000x 1
	run '^Benchmark(SessionLock|SessionLockPaired|PairedCalibration)$/./conns=8' 20000x 1
	run '^Benchmark(TryLock|XactLock|Middleware)$' 5000x 1
	run '^BenchmarkLockAll$' 150x 1
	run '^BenchmarkHotKey$' 800x 1
	# A private durable server (fsync on) per sample: what a token costs.
	run '^BenchmarkFencing$' 2000x 1
	# No server: the client's own work per lock+unlock.
	run '^BenchmarkOverhead$' 200000x 1
done
# One private server per sample would cost a server start each: one sample
# of 3 iterations instead (ns/op is their mean).
run '^BenchmarkManyLocks$' 3x 1

if [ -z "$report_only" ]; then
	elapsed=$(( $(date +%s) - t0 ))
	load_after=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
	read -r ticks_after steal_after < <(cpu_ticks)
	steal=unknown
	if [ "$ticks_after" -gt "$ticks_before" ]; then
		steal=$(awk -v s=$((steal_after - steal_before)) -v t=$((ticks_after - ticks_before)) 'BEGIN { printf "%.1f%%", 100 * s / t }')
	fi
	commit="$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes in the checkout)')"
	printf 'started=%q\nelapsed=%q\nload_before=%q\nload_after=%q\nsteal=%q\ncommit=%q\n' \
		"$started" "$elapsed" "$load_before" "$load_after" "$steal" "$commit" >"$out/meta"
fi

echo "bench.sh: computing ratios" >&2
go run ./internal/benchsuite/benchreport "$raw" >"$out/ratios.md" || exit 1

benchstat=$(command -v benchstat || true)
if [ -z "$benchstat" ] && [ -x "$(go env GOPATH)/bin/benchstat" ]; then
	benchstat="$(go env GOPATH)/bin/benchstat"
fi
# benchstat reads result lines only (failure logs can be very long lines).
grep -E '^(goos|goarch|pkg|cpu|Benchmark[^ ]+-[0-9]+[[:space:]]+[0-9]+)' "$raw" >"$out/bench.results.txt"
if [ -n "$benchstat" ]; then
	"$benchstat" -col /form "$out/bench.results.txt" >"$out/benchstat.txt" 2>&1
else
	go run golang.org/x/perf/cmd/benchstat@latest -col /form "$out/bench.results.txt" >"$out/benchstat.txt" 2>&1
fi

cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo 2>/dev/null)
server=$(grep -m1 'itest: PostgreSQL from' "$raw" | sed 's/^ *//')
pgversion=$(grep -m1 -o 'pgadvisory/postgres:[0-9]*' "$raw" || true)

# A hand-written part at the end of the Markdown file, from the marker line
# on, is kept as it is (the generated part is everything before it).
marker='<!-- Hand-written from here on: scripts/bench.sh keeps it. -->'
kept=
if [ -f "$md" ]; then
	kept=$(awk -v m="$marker" 'index($0, m) == 1 { found = 1 } found' "$md")
fi

{
	cat <<EOF
# Benchmarks

Written by \`scripts/bench.sh\` (do not edit by hand; rerun the script). The
suite is \`internal/benchsuite\`; the ratios come from
\`internal/benchsuite/benchreport\`; the comparison tables from benchstat.

- Date: $started, run took ${elapsed}s
- Commit: $commit
- Machine: $(uname -srm), $(nproc) CPUs ($cpu), $mem
- Load average before / after: $load_before / $load_after
- CPU time stolen by the hypervisor during the run: ${steal:-unknown}
- Go: $(go version | cut -d' ' -f3-)
- Server: ${server:-see the raw output}${pgversion:+ (ManyLocks: private server $pgversion)}
- Samples: $count per benchmark, in $count interleaved rounds (ManyLocks: 1 sample of 3 iterations)
- Commands (in \`internal/benchsuite\`, binary from \`go test -c\`):
$(for c in "${commands[@]}"; do printf '  - `%s`\n' "$c"; done)

A load average far above the number of CPUs means other work shared the
machine: absolute figures are then inflated and noisy, and the ratios, which
compare forms measured in the same run, are the figures to read.

EOF
	cat "$out/ratios.md"
	cat <<'EOF'

## How to read the cases

- **SessionLock**: lock+unlock of a random key, uncontended. `library` is
  `advisory.Locker.Lock` + `Lease.Release` (a pooled connection per lease);
  `raw-params` is `SELECT pg_advisory_lock($1)` / `pg_advisory_unlock($1)` on a
  connection pinned for the whole run; `raw-inline` writes the integer into
  the SQL text. lib/pq spends an extra round trip preparing every statement
  with a parameter; pgx caches prepared statements by text, so inline text
  thrashes its cache. Informational forms: `raw-pooled` is the best raw form
  on a connection taken from the pool for each lock (as the library does),
  `raw-deadline` the best raw form on a pinned connection with every
  statement under a context with a deadline.
- **SessionLockPaired** and **PairedCalibration**: the library and the best
  raw form in turns in one loop (each goroutine has a pinned connection for
  the raw form, moved every 63 pairs to the one the pool gave out last);
  the calibration runs the raw form against itself there (`pair=raw`). A
  calibration far from 1 means the harness favours one side: with a period
  of 64 it did, by 3-7% against whichever form ran first after a move.
  `pair=pooled` runs the raw form on a connection taken from the pool for
  each lock, as a lease does, against the raw form on the goroutine's own
  connection: on a small machine with the server on it, a goroutine that
  keeps one backend is faster than one that meets another backend at every
  lock, whoever does the locking.
- **Overhead**: the same lock+unlock without a server: the connections
  answer every statement at once, and `db.Driver()` is the real driver, so
  the library takes the path it takes with that driver (`raw-pooled`: the
  raw form on a pooled connection per lock). It shows what the
  client itself spends (database/sql included, the driver's encoding and
  socket not), free of the network's noise. With 8 goroutines on this
  machine the client's work competes with the server for the same CPUs,
  so every nanosecond here shows in the uncontended ratios.
- **HotKey**: 64 goroutines of one process on one key, pools of 64
  connections. `raw`: each goroutine waits on its own connection.
  `library`: `advisory.Locker` as it is: goroutines of the process queue per
  key in memory (`internal/keyqueue`), only the head goes to the server, and
  a releasing holder hands the held lock to the next local waiter within the
  default handoff budget (`WithHandoff`). `library-nohandoff`: the queue
  only (`WithHandoff(0, 0)`). `conns` is the peak of connections in use,
  sampled from `db.Stats()`; `waiting-conns` is that minus the holder's.
- **ManyLocks**: 10,000 session locks held at once. `library` is one
  `LockAll` lease; `library-4conns` four leases of 2,500 keys in parallel;
  `proposal-unlockmany` (the name stays for comparison across runs) is the
  library's own statements (`sqltext.LockAll`, then `sqltext.UnlockMany`,
  one round trip each) on a pinned connection, which `Release` now uses too;
  `raw-array` is one hand-written statement each way.
- **Middleware**: one request through `middleware.Lock` (fail fast),
  `Lock` with `WaitUpTo` (the key is free: the try that comes first takes
  it; a busy key would cost one more round trip before the bounded wait),
  and `TxLock`, in memory with httptest, against the
  bare handler. `stmts/op` counts statements with a counting driver wrapper;
  TxLock's BEGIN and COMMIT are the handler's transaction, so only the lock
  statement counts against the goal. B/op includes the driver's allocations.
- **Fencing** (issue 11): lock+unlock of a key from a set of 1,000 (every
  key has its counter row: a steady-state table), on a private server with
  fsync, synchronous_commit and full_page_writes on. `library` is
  `advisory.New(db, advisory.WithFencing(""))`: the token is bumped in the
  acquire statement and committed asynchronously (the epoch is bumped
  durably once per server lifetime); `library-nofence` is the same Locker
  without fencing. Each goroutine has keys of its own, so nothing waits.

## benchstat (columns by form)

```
EOF
	cat "$out/benchstat.txt"
	echo '```'
	echo
	echo "Raw output: $raw (not kept in the repository)."
} >"$md"
if [ -n "$kept" ]; then
	printf '\n%s\n' "$kept" >>"$md"
fi

echo "bench.sh: wrote $md (raw output in $out)" >&2
