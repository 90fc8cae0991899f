// Package benchsuite holds the performance benchmarks of the module (issue
// 8). It has no code of its own: the benchmarks are in its _test.go files and
// run against a real PostgreSQL from itest, on both drivers, each next to the
// best plain database/sql form measured in the same run.
//
// Benchmark names are stable so that benchstat can compare runs:
//
//	BenchmarkSessionLock/driver=pgx/conns=8/form=library
//	BenchmarkSessionLock/driver=pgx/conns=8/form=raw-params
//	BenchmarkSessionLock/driver=pgx/conns=8/form=raw-inline
//
// form=library* is this module; form=raw* is what a careful user writes by
// hand with database/sql. scripts/bench.sh runs the suite and writes the
// ratios into BENCHMARKS.md; the benchreport command in this directory does
// the arithmetic. Nothing here asserts a timing: goals are ratios, read by
// people.
//
// Families: SessionLock (uncontended lock+unlock of random keys),
// SessionLockPaired (the same, the library and the best raw form run
// alternately in one loop so that drifting load weighs on both),
// PairedCalibration (the best raw form against itself in that loop, the
// harness's own error, and on a pooled connection per lock against itself
// on a kept one), TryLock,
// XactLock (in a transaction), LockAll (10 keys), HotKey (64 goroutines on
// one key), ManyLocks (10,000 session locks held at once), Middleware (HTTP)
// and Fencing (issue 11: lock+unlock with
// a fencing token against without, on a private durable server).
package benchsuite
