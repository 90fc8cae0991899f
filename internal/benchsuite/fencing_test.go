package benchsuite

// BenchmarkFencing (issue 11) goes here: the cost of taking a fencing token
// with the lock. Shape it like BenchmarkSessionLock so that the names line
// up for benchstat and benchreport:
//
//	BenchmarkFencing/driver=pgx/conns=1/form=library          advisory.New(db, advisory.WithFencing(...)): Lock + Token + Release
//	BenchmarkFencing/driver=pgx/conns=1/form=library-nofence  the same Locker options without fencing
//
// on a database where the counter table exists (create it in the driver's
// setup), and add a row to internal/benchsuite/benchreport for the ratio
// library / library-nofence (the goal: the token costs no extra round trip).
