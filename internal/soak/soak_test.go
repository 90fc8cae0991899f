package soak_test

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/faultproxy"
	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/soak"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// EnvSoak makes the soak run longer: a Go duration (PGADVISORY_SOAK=10m),
// shared between the two drivers.
const EnvSoak = "PGADVISORY_SOAK"

// Shape of the soak. Small on purpose: few keys and several workers per key
// make contention constant, a short keepalive makes losses show quickly.
const (
	procs        = 4                      // "processes": a *sql.DB, a proxy and a Locker each (odd ones with dedicated sessions)
	perProc      = 3                      // goroutines per process
	nkeys        = 3                      // keys they contend on
	keepAlive    = 200 * time.Millisecond // advisory.WithKeepAlive
	attemptLimit = 3 * time.Second        // bound of one Do, wait included
	maxSections  = 200_000                // count bound, whatever the duration
	shortRun     = 10 * time.Second       // per driver, without EnvSoak

	// A share of the sections hold the lock for longer than the keepalive
	// interval (soakConfig.longPercent overrides it).
	longPercent = 5
	longMin     = 300 * time.Millisecond
	// sharedPercent of the sections are readers under LockShared.
	sharedPercent = 20
	longMax       = 900 * time.Millisecond
)

// lossBound is the contract of loss detection (package advisory): a loss is
// signalled within the keepalive interval plus about one second.
const lossBound = keepAlive + time.Second

// soakDuration is the run time per driver.
func soakDuration(t *testing.T) time.Duration {
	v := os.Getenv(EnvSoak)
	if v == "" {
		if testing.Short() {
			return shortRun / 2
		}
		return shortRun
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive Go duration such as 10m", EnvSoak, v)
	}
	return d / time.Duration(len(itest.Drivers))
}

// TestSoak runs workers in several processes that contend on a few keys
// through advisory.Locker.Do while backends are killed and network paths
// cut or blackholed at random, and checks afterwards that mutual exclusion
// held, that the counters the lock protects add up, and that nothing is left
// locked or in use.
func TestSoak(t *testing.T) {
	d := soakDuration(t)
	itest.EachDriver(t, func(t *testing.T, driver string) {
		runSoak(t, soakConfig{srv: itest.Shared(t), drivers: []string{driver}, d: d})
	})
}

// soakConfig is what differs between soak runs.
type soakConfig struct {
	srv     *itest.Server
	drivers []string      // process i uses drivers[i % len(drivers)]
	d       time.Duration // how long the workers run
	// restartAt, if positive, restarts srv once, this long into the run
	// (srv must be a server of the test's own); the run then lasts at
	// least afterRestart longer than the restart.
	restartAt time.Duration
	// longPercent, if positive, is the share of long sections.
	longPercent int
}

// afterRestart is how long a soak goes on once a restart is done.
const afterRestart = 4 * time.Second

// run is the state of one soak run.
type run struct {
	t     *testing.T
	admin *sql.DB
	keys  []keyspace.Key
	rec   soak.Recorder
	// longPercent is the share of sections that outlast the keepalive.
	longPercent int
	start       time.Time
	stop        chan struct{}
	nsec        atomic.Int64 // sections entered
	lostCB      atomic.Int64 // Hooks.Lost calls

	// The in-memory counters, guarded only by the advisory lock: a
	// read-modify-write with a pause in the middle, so that two holders
	// at once lose an update. memWrites counts the writes done.
	mem       [nkeys]atomic.Int64
	memWrites [nkeys]atomic.Int64
	tornReads [nkeys]atomic.Int64 // readers that saw the counter change while they believed

	// The database counters, written by a read-modify-write in a
	// transaction on the holding connection (Lease.Tx).
	fenced     soak.Recorder // sections whose transaction committed: [Enter, end of the transaction's work]
	dbCommits  [nkeys]atomic.Int64
	dbDoubtful [nkeys]atomic.Int64 // Tx returned an error: committed or not

	mu       sync.Mutex
	kills    map[int]time.Time // backend pid -> when it was terminated
	cuts     [procs][]time.Time
	restarts []time.Time
	faults   map[string]int
	failures map[string]int // acquire errors by kind
}

func runSoak(t *testing.T, cfg soakConfig) {
	srv, d := cfg.srv, cfg.d
	dsn := srv.NewDatabase(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	dbname := strings.TrimPrefix(u.Path, "/")
	admin := itest.OpenDSN(t, "postgres", dsn)
	admin.SetMaxOpenConns(1) // one backend, which TerminateAll spares
	ctx := context.Background()
	if _, err := admin.ExecContext(ctx, `CREATE TABLE soak_counter (k int PRIMARY KEY, n bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ExecContext(ctx, `INSERT INTO soak_counter SELECT g, 0 FROM generate_series(0, $1::int - 1) g`, nkeys); err != nil {
		t.Fatal(err)
	}

	r := &run{
		t: t, admin: admin, stop: make(chan struct{}), longPercent: cmp.Or(cfg.longPercent, longPercent),
		kills: map[int]time.Time{}, faults: map[string]int{}, failures: map[string]int{},
	}
	for i := range nkeys {
		r.keys = append(r.keys, keyspace.Int64(int64(1000+i)))
	}
	proxies := make([]*faultproxy.Proxy, procs)
	dbs := make([]*sql.DB, procs)
	lockers := make([]*advisory.Locker, procs)
	for i := range procs {
		p, err := faultproxy.New(srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		proxies[i] = p
		t.Cleanup(func() { p.Close() })
		db, err := sql.Open(cfg.drivers[i%len(cfg.drivers)], srv.DSNAt(p.Addr(), dbname))
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(perProc + 2)
		t.Cleanup(func() { db.Close() })
		dbs[i] = db
		opts := []advisory.Option{advisory.WithKeepAlive(keepAlive),
			advisory.WithHooks(advisory.Hooks{Lost: func(keyspace.Key, error) { r.lostCB.Add(1) }})}
		if i%2 == 1 {
			// Every other process keeps a connection per lease; the others
			// multiplex their leases (the default).
			opts = append(opts, advisory.WithDedicatedSessions())
		}
		lockers[i] = advisory.New(db, opts...)
	}

	r.start = time.Now()
	var wg sync.WaitGroup
	for i := range procs {
		for g := range perProc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.worker(fmt.Sprintf("p%d.g%d", i, g), i, lockers[i])
			}()
		}
	}
	var fwg sync.WaitGroup
	fwg.Add(1)
	go func() { defer fwg.Done(); r.injectFaults(proxies) }()
	settled := make(chan struct{}) // closed afterRestart after the restart (at once without one)
	if cfg.restartAt > 0 {
		fwg.Add(1)
		go func() { defer fwg.Done(); r.restart(srv, cfg.restartAt, settled) }()
	} else {
		close(settled)
	}

	timer := time.NewTimer(d)
	tick := time.NewTicker(50 * time.Millisecond)
	for done := false; !done; {
		select {
		case <-timer.C:
			done = true
		case <-tick.C:
			done = r.nsec.Load() >= maxSections
		}
	}
	tick.Stop()
	select {
	case <-settled:
	case <-time.After(3 * time.Minute):
		t.Error("the restart did not finish within 3 minutes")
	}
	close(r.stop)
	fwg.Wait()
	for _, p := range proxies {
		p.Refuse(false)
		p.Forward()
	}
	wg.Wait()
	elapsed := time.Since(r.start)

	r.report(t, strings.Join(cfg.drivers, "+"), elapsed, proxies)

	// Nothing left behind: no lock in pg_locks, no connection in use.
	left := r.locksLeft()
	t.Logf("locks left in pg_locks: %d", left)
	if left != 0 {
		testkit.WaitNoAdvisoryLocks(t, admin) // fails with the rows
	}
	for _, db := range dbs {
		testkit.WaitConnsIdle(t, db)
	}
}

// worker runs sections until the run stops: mostly exclusive ones through
// Locker.Do, some shared ones (readers) through LockShared.
func (r *run) worker(name string, proc int, l *advisory.Locker) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(proc)))
	for {
		select {
		case <-r.stop:
			return
		default:
		}
		if r.nsec.Load() >= maxSections {
			return
		}
		ki := rng.IntN(nkeys)
		var ok bool
		if rng.IntN(100) < sharedPercent {
			ok = r.readerSection(name, l, ki, rng)
		} else {
			ok = r.writerSection(name, l, ki, rng)
		}
		if !ok {
			// A worker pauses before it tries again, as real ones do, so
			// that a server that is down is not hammered in a busy loop.
			pause := time.NewTimer(time.Duration(10+rng.IntN(40)) * time.Millisecond)
			select {
			case <-r.stop:
			case <-pause.C:
			}
			pause.Stop()
		}
	}
}

// watchLost notes when lease's Lost closes; the function it returns stops
// watching and gives that moment (zero if the lease was not lost), so the
// note is certain to be taken before the section is recorded.
func watchLost(lease *advisory.Lease) func() time.Time {
	done := make(chan struct{})
	result := make(chan time.Time, 1)
	go func() {
		select {
		case <-lease.Lost():
			result <- time.Now()
		case <-done:
			result <- time.Time{}
		}
	}()
	return func() time.Time {
		close(done)
		return <-result
	}
}

// outcome files the end of a section by the error that ended it.
func outcome(err error) soak.Outcome {
	switch {
	case err == nil:
		return soak.Confirmed
	case errors.Is(err, advisory.ErrLockLost):
		return soak.Lost
	}
	return soak.Unverified
}

// writerSection runs one exclusive section through Do: the database counter
// on the holding connection, then the in-memory counter. It reports whether
// the lock was acquired.
func (r *run) writerSection(name string, l *advisory.Locker, ki int, rng *rand.Rand) bool {
	ctx, cancel := context.WithTimeout(context.Background(), attemptLimit)
	defer cancel()
	var (
		s       soak.Section
		entered bool
	)
	err := l.Do(ctx, r.keys[ki], func(ctx context.Context) error {
		entered = true
		r.nsec.Add(1)
		s = soak.Section{Holder: name, Key: r.keys[ki].String(), Enter: time.Now()}
		lease, _ := advisory.LeaseFromContext(ctx)
		s.PID = lease.PID()
		stop := watchLost(lease)
		defer func() { s.LostAt = stop() }()
		if err := r.dbSection(ctx, lease, ki, rng, s); err != nil {
			s.Exit = time.Now()
			return err
		}
		err := r.memSection(ctx, ki, rng)
		s.Exit = time.Now()
		return err
	})
	if !entered {
		r.countFailure(err)
		return false
	}
	s.Outcome = outcome(err)
	r.rec.Add(s)
	return true
}

// readerSection runs one shared section: it reads the in-memory counter,
// works, and reads it again. A writer inside the section would change it: a
// torn read. It reports whether the lock was acquired.
func (r *run) readerSection(name string, l *advisory.Locker, ki int, rng *rand.Rand) bool {
	ctx, cancel := context.WithTimeout(context.Background(), attemptLimit)
	defer cancel()
	lease, err := l.LockShared(ctx, r.keys[ki])
	if err != nil {
		r.countFailure(err)
		return false
	}
	r.nsec.Add(1)
	s := soak.Section{Holder: name, Key: r.keys[ki].String(), Shared: true, Enter: time.Now(), PID: lease.PID()}
	stop := watchLost(lease)
	v := r.mem[ki].Load()
	work := time.NewTimer(r.workTime(rng))
	select {
	case <-lease.Lost():
	case <-work.C:
	}
	work.Stop()
	torn := r.mem[ki].Load() != v
	s.Exit = time.Now()
	s.LostAt = stop()
	if torn && s.LostAt.IsZero() {
		r.tornReads[ki].Add(1)
	}
	s.Outcome = outcome(lease.Release(ctx))
	r.rec.Add(s)
	return true
}

// memSection is the critical section on the in-memory counter: a careful
// holder checks that it still believes before it writes.
func (r *run) memSection(ctx context.Context, ki int, rng *rand.Rand) error {
	v := r.mem[ki].Load()
	// Simulated work between the read and the write: any second holder
	// inside this window loses an update. Most sections are short; some
	// outlast the keepalive interval, so that faults hit them while held and
	// the keepalive has to notice.
	t := time.NewTimer(r.workTime(rng))
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	t.Stop()
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mem[ki].Store(v + 1)
	r.memWrites[ki].Add(1)
	return nil
}

// workTime is how long a section works: mostly short; a share outlast the
// keepalive interval, so that faults hit them while held and the keepalive
// has to notice.
func (r *run) workTime(rng *rand.Rand) time.Duration {
	if rng.IntN(100) < r.longPercent {
		return longMin + time.Duration(rng.Int64N(int64(longMax-longMin)))
	}
	return time.Duration(rng.IntN(2000)) * time.Microsecond
}

// dbSection is the critical section on the database counter: a
// read-modify-write in a transaction on the holding connection, which can
// commit only while the session, and so the lock, is alive.
//
// A committed transaction proves that the session, and so the lock, was
// alive from the grant to the commit: the section up to the end of the
// transaction's work is recorded in r.fenced, where no two may overlap.
func (r *run) dbSection(ctx context.Context, l *advisory.Lease, ki int, rng *rand.Rand, s soak.Section) error {
	err := l.Tx(ctx, func(tx *sql.Tx) error {
		defer func() { s.Exit = time.Now() }() // before the commit is sent
		var n int64
		if err := tx.QueryRowContext(ctx, `SELECT n FROM soak_counter WHERE k = $1`, ki).Scan(&n); err != nil {
			return err
		}
		time.Sleep(time.Duration(rng.IntN(1000)) * time.Microsecond)
		_, err := tx.ExecContext(ctx, `UPDATE soak_counter SET n = $1 WHERE k = $2`, n+1, ki)
		return err
	})
	if err != nil {
		r.dbDoubtful[ki].Add(1)
		return err
	}
	r.dbCommits[ki].Add(1)
	s.Outcome = soak.Confirmed
	r.fenced.Add(s)
	return nil
}

// countFailure files an acquire that never entered its section.
func (r *run) countFailure(err error) {
	kind := "other"
	var ne net.Error
	switch {
	case err == nil:
		kind = "nil" // cannot happen: Do ran fn or failed
	case errors.Is(err, context.DeadlineExceeded):
		kind = "deadline"
	case errors.Is(err, advisory.ErrLockTimeout):
		kind = "lock_timeout"
	case errors.Is(err, advisory.ErrPooler):
		kind = "pooler"
	case pgerr.SQLState(err) == pgerr.AdminShutdown:
		kind = "backend terminated"
	case pgerr.SQLState(err) == "57P03": // cannot_connect_now
		kind = "server starting or stopping"
	case errors.Is(err, driver.ErrBadConn), errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		kind = "connection broken"
	}
	r.mu.Lock()
	r.failures[kind]++
	if kind == "other" && r.failures[kind] <= 3 {
		r.t.Logf("acquire error (sample): %v", err)
	}
	r.mu.Unlock()
}

// injectFaults hits a random target every 100-500 ms until the run stops.
func (r *run) injectFaults(proxies []*faultproxy.Proxy) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 99))
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-r.stop:
			return false
		case <-t.C:
			return true
		}
	}
	for wait(time.Duration(100+rng.IntN(400)) * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		switch x := rng.IntN(100); {
		case x < 35: // kill a backend that holds a lock
			locks, err := testkit.AdvisoryLocks(ctx, r.admin)
			var holders []int
			for _, l := range locks {
				if l.Granted && err == nil {
					holders = append(holders, l.PID)
				}
			}
			if len(holders) > 0 {
				pid := holders[rng.IntN(len(holders))]
				at := time.Now()
				if ok, _ := testkit.Terminate(ctx, r.admin, pid); ok {
					r.fault("kill holder", func() { r.kills[pid] = at })
				}
			}
		case x < 50: // kill any backend of the database (holder, waiter or idle)
			pids, err := testkit.Backends(ctx, r.admin)
			if err == nil && len(pids) > 0 {
				pid := pids[rng.IntN(len(pids))]
				at := time.Now()
				if ok, _ := testkit.Terminate(ctx, r.admin, pid); ok {
					r.fault("kill backend", func() { r.kills[pid] = at })
				}
			}
		case x < 85: // cut a process's network path
			i := rng.IntN(len(proxies))
			at := time.Now()
			if proxies[i].Cut() > 0 {
				r.fault("proxy cut", func() { r.cuts[i] = append(r.cuts[i], at) })
			}
		default: // a partition of one process, healed after a while
			i := rng.IntN(len(proxies))
			proxies[i].Blackhole()
			r.fault("blackhole", func() {})
			wait(time.Duration(300+rng.IntN(900)) * time.Millisecond)
			proxies[i].Forward()
		}
		cancel()
	}
}

// restart restarts the server once, after the given delay.
func (r *run) restart(srv *itest.Server, after time.Duration, settled chan<- struct{}) {
	defer close(settled)
	t := time.NewTimer(after)
	defer t.Stop()
	select {
	case <-r.stop:
		return
	case <-t.C:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	at := time.Now()
	err := srv.Restart(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.t.Errorf("restart: %v", err)
		return
	}
	r.faults["server restart"]++
	r.restarts = append(r.restarts, at)
	r.t.Logf("server restarted in %v", time.Since(at).Round(time.Millisecond))
	r.mu.Unlock()
	t.Reset(afterRestart)
	<-t.C
	r.mu.Lock()
}

func (r *run) fault(kind string, f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults[kind]++
	f()
}

// locksLeft waits up to 10 s for the advisory locks of the database to go
// and returns how many are left.
func (r *run) locksLeft() int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		locks, err := testkit.AdvisoryLocks(ctx, r.admin)
		cancel()
		if err == nil && len(locks) == 0 {
			return 0
		}
		if time.Now().After(deadline) {
			if err != nil {
				r.t.Fatalf("reading pg_locks: %v", err)
			}
			return len(locks)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// report prints the figures and checks the invariants.
func (r *run) report(t *testing.T, driver string, elapsed time.Duration, proxies []*faultproxy.Proxy) {
	sections := r.rec.Sections()
	rep := soak.Check(sections)

	r.mu.Lock()
	faults := 0
	var fl []string
	for k, n := range r.faults {
		faults += n
		fl = append(fl, fmt.Sprintf("%s %d", k, n))
	}
	var fails []string
	for k, n := range r.failures {
		fails = append(fails, fmt.Sprintf("%s %d", k, n))
	}
	kills := r.kills
	cuts := r.cuts
	restarts := r.restarts
	r.mu.Unlock()
	slices.Sort(fl)
	slices.Sort(fails)

	// Loss detection delay after a kill of the holder's backend.
	var delays, cutDelays, restartDelays []time.Duration
	for _, s := range sections {
		if s.Outcome != soak.Lost || s.LostAt.IsZero() {
			continue
		}
		if at, ok := kills[s.PID]; ok && at.After(s.Enter) && at.Before(s.LostAt) {
			delays = append(delays, s.LostAt.Sub(at))
			continue
		}
		if i := slices.IndexFunc(restarts, func(at time.Time) bool { return at.After(s.Enter) && at.Before(s.LostAt) }); i >= 0 {
			restartDelays = append(restartDelays, s.LostAt.Sub(restarts[i]))
			continue
		}
		var proc, g int
		if _, err := fmt.Sscanf(s.Holder, "p%d.g%d", &proc, &g); err != nil {
			continue
		}
		for _, at := range cuts[proc] {
			if at.After(s.Enter) && at.Before(s.LostAt) {
				cutDelays = append(cutDelays, s.LostAt.Sub(at))
				break
			}
		}
	}
	slices.Sort(delays)
	slices.Sort(cutDelays)
	slices.Sort(restartDelays)

	t.Logf("soak %s: %v, %d processes x %d goroutines on %d keys, keepalive %v", driver,
		elapsed.Round(time.Millisecond), procs, perProc, nkeys, keepAlive)
	readers := 0
	for _, s := range sections {
		if s.Shared {
			readers++
		}
	}
	t.Logf("sections: %d, %d of them shared (confirmed %d, lost %d, unverified %d); acquires that failed: %s",
		rep.Sections, readers, rep.ByOutcome[soak.Confirmed], rep.ByOutcome[soak.Lost], rep.ByOutcome[soak.Unverified], strings.Join(fails, ", "))
	t.Logf("faults injected: %d (%s)", faults, strings.Join(fl, ", "))
	t.Logf("losses detected: %d (Lost hook calls %d)", rep.ByOutcome[soak.Lost], r.lostCB.Load())
	if len(delays) > 0 {
		t.Logf("loss detection after a kill of the holder: %d measured, median %v, max %v (bound %v)",
			len(delays), delays[len(delays)/2].Round(time.Millisecond), delays[len(delays)-1].Round(time.Millisecond), lossBound)
	}
	if len(cutDelays) > 0 {
		t.Logf("loss detection after a proxy cut of the holder: %d measured, median %v, max %v (bound %v)",
			len(cutDelays), cutDelays[len(cutDelays)/2].Round(time.Millisecond), cutDelays[len(cutDelays)-1].Round(time.Millisecond), lossBound)
	}
	if len(restartDelays) > 0 {
		t.Logf("loss detection after a server restart: %d measured, median %v, max %v (bound %v)",
			len(restartDelays), restartDelays[len(restartDelays)/2].Round(time.Millisecond), restartDelays[len(restartDelays)-1].Round(time.Millisecond), lossBound)
	}
	t.Logf("overlaps of confirmed holders: %d (must be 0)", len(rep.Violations))
	t.Logf("overlaps inside loss-detection windows: %d, longest %v (the server freed the lock before the holder noticed; only fencing protects writes there)",
		len(rep.Windows), rep.MaxWindow.Round(time.Millisecond))
	for i := range proxies {
		t.Logf("proxy p%d: %+v", i, proxies[i].Stats())
	}
	if len(rep.Violations) > 0 {
		t.Errorf("mutual exclusion violated:\n%v", rep)
	}
	for _, o := range rep.Windows {
		if o.Duration > lossBound {
			t.Errorf("an overlap lasted %v, longer than the loss-detection bound %v: %v", o.Duration, lossBound, o)
		}
	}
	if n := len(delays); n > 0 && delays[n-1] > lossBound {
		t.Errorf("a loss was signalled %v after the kill, bound %v", delays[n-1], lossBound)
	}
	if n := len(cutDelays); n > 0 && cutDelays[n-1] > lossBound {
		t.Errorf("a loss was signalled %v after the cut, bound %v", cutDelays[n-1], lossBound)
	}
	if n := len(restartDelays); n > 0 && restartDelays[n-1] > lossBound {
		t.Errorf("a loss was signalled %v after the restart began, bound %v", restartDelays[n-1], lossBound)
	}
	if rep.Sections == 0 {
		t.Error("no section ran")
	}

	// The in-memory counters: every write must be there unless two holders
	// were inside at once, which only a loss window allows.
	windowKeys := map[string]bool{}
	for _, o := range rep.Windows {
		windowKeys[o.A.Key] = true
	}
	for i, k := range r.keys {
		got, want := r.mem[i].Load(), r.memWrites[i].Load()
		torn := r.tornReads[i].Load()
		t.Logf("key %v: in-memory counter %d, writes %d, torn reads %d", k, got, want, torn)
		if got != want && !windowKeys[k.String()] {
			t.Errorf("key %v: in-memory counter %d != %d writes, with no overlap to explain it", k, got, want)
		}
		if torn > 0 && !windowKeys[k.String()] {
			t.Errorf("key %v: %d readers saw a write while they held the shared lock, with no overlap to explain it", k, torn)
		}
	}

	// The database counters, fenced by the holding session: exact, up to
	// transactions whose outcome the client could not know.
	frep := soak.Check(r.fenced.Sections())
	t.Logf("overlaps of fenced sections (transaction committed on the holding session): %d of %d sections (must be 0)",
		len(frep.Violations), frep.Sections)
	if len(frep.Violations) > 0 {
		t.Errorf("fenced sections overlapped:\n%v", frep)
	}
	for i, k := range r.keys {
		var n int64
		if err := r.admin.QueryRowContext(context.Background(), `SELECT n FROM soak_counter WHERE k = $1`, i).Scan(&n); err != nil {
			t.Fatal(err)
		}
		c, dbt := r.dbCommits[i].Load(), r.dbDoubtful[i].Load()
		t.Logf("key %v: database counter %d, commits %d, doubtful %d", k, n, c, dbt)
		if n < c || n > c+dbt {
			t.Errorf("key %v: database counter %d outside [%d, %d]: a fenced write was lost or doubled", k, n, c, c+dbt)
		}
	}
}
