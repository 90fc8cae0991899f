package advisory_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// lossKeepAlive is the keepalive of the loss tests; a loss must be seen
// within it plus one second.
const lossKeepAlive = 500 * time.Millisecond

// lossBound is the promise: keepalive interval + 1 s.
const lossBound = lossKeepAlive + time.Second

// doUntilLost runs l.Do on key in the background and returns the lease (once
// fn runs), a channel that receives Do's error, and a channel closed when
// fn's context is done.
func doUntilLost(t *testing.T, l *advisory.Locker, key keyspace.Key) (*advisory.Lease, <-chan error, <-chan time.Time) {
	t.Helper()
	leaseCh := make(chan *advisory.Lease, 1)
	doneAt := make(chan time.Time, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- l.Do(context.Background(), key, func(ctx context.Context) error {
			lease, _ := advisory.LeaseFromContext(ctx)
			leaseCh <- lease
			<-ctx.Done()
			doneAt <- time.Now()
			if !errors.Is(context.Cause(ctx), advisory.ErrLockLost) {
				t.Errorf("Do's context cause = %v, want ErrLockLost", context.Cause(ctx))
			}
			return ctx.Err()
		})
	}()
	select {
	case lease := <-leaseCh:
		return lease, errc, doneAt
	case err := <-errc:
		t.Fatalf("Do: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Do did not start")
	}
	return nil, nil, nil
}

// checkLoss waits for the lease's loss and Do's end, and checks and prints
// the delays measured from t0.
func checkLoss(t *testing.T, what string, t0 time.Time, lease *advisory.Lease, errc <-chan error, doneAt <-chan time.Time, bound time.Duration) {
	t.Helper()
	select {
	case <-lease.Lost():
	case <-time.After(bound + 10*time.Second):
		t.Fatalf("%s: no loss after %v", what, time.Since(t0))
	}
	lostAfter := time.Since(t0)
	var cancelAfter time.Duration
	select {
	case at := <-doneAt:
		cancelAfter = at.Sub(t0)
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: Do's context not cancelled", what)
	}
	t.Logf("%s: Lost() closed after %v, Do's context cancelled after %v (bound %v): %v",
		what, lostAfter.Round(time.Millisecond), cancelAfter.Round(time.Millisecond), bound, lease.Err())
	if lostAfter > bound || cancelAfter > bound {
		t.Errorf("%s: loss signalled after %v / %v, want within %v", what, lostAfter, cancelAfter, bound)
	}
	if !errors.Is(lease.Err(), advisory.ErrLockLost) {
		t.Errorf("%s: Err = %v, want ErrLockLost", what, lease.Err())
	}
	select {
	case err := <-errc:
		if !errors.Is(err, advisory.ErrLockLost) {
			t.Errorf("%s: Do = %v, want ErrLockLost", what, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: Do did not return", what)
	}
}

func TestLossTerminate(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		var hooked error
		lost := make(chan struct{})
		l := advisory.New(e.db, advisory.WithKeepAlive(lossKeepAlive), advisory.WithHooks(advisory.Hooks{
			Lost: func(_ keyspace.Key, err error) { hooked = err; close(lost) },
		}))
		key := testKey(t)
		lease, errc, doneAt := doUntilLost(t, l, key)
		t0 := time.Now()
		e.terminate(t, lease.PID())
		checkLoss(t, "pg_terminate_backend", t0, lease, errc, doneAt, lossBound)
		<-lost
		if !errors.Is(hooked, advisory.ErrLockLost) {
			t.Errorf("Lost hook got %v", hooked)
		}
		// The key is free for others and the pool still works.
		again, err := advisory.New(e.db).TryLock(timeout(t, 10*time.Second), key)
		if err != nil {
			t.Fatalf("TryLock after the loss: %v", err)
		}
		if err := again.Release(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestLossBlackhole(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		p, db := e.throughProxy(t, driver)
		l := advisory.New(db, advisory.WithKeepAlive(lossKeepAlive))
		key := testKey(t)
		lease, errc, doneAt := doUntilLost(t, l, key)
		// A plain lease too, released by the caller after the loss.
		plain, err := l.Lock(timeout(t, 10*time.Second), keyspace.Pair(1, 1))
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		p.Blackhole()
		checkLoss(t, "blackhole", t0, lease, errc, doneAt, lossBound)
		select {
		case <-plain.Lost():
		case <-time.After(lossBound):
			t.Fatalf("plain lease not lost after %v", time.Since(t0))
		}
		// Heal the partition the hard way, as a firewall timing out would:
		// the stuck driver calls return, the connections are discarded and
		// the server ends the sessions.
		p.Cut()
		if err := plain.Release(context.Background()); !errors.Is(err, advisory.ErrLockLost) {
			t.Fatalf("Release of a lost lease = %v", err)
		}
		p.Forward()
		testkit.WaitNoAdvisoryLocks(t, e.admin)
		testkit.WaitConnsIdle(t, db)
	})
}

func TestLossRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starting and restarting a private server takes a minute or more")
	}
	srv := itest.NewServer(t, itest.Config{})
	itest.EachDriver(t, func(t *testing.T, driver string) {
		db := setupOn(t, srv, driver).db
		if err := advisory.CreateFenceTable(timeout(t, 30*time.Second), db, ""); err != nil {
			t.Fatal(err)
		}
		l := advisory.New(db, advisory.WithKeepAlive(lossKeepAlive), advisory.WithFencing(""))
		key := testKey(t)
		lease, errc, doneAt := doUntilLost(t, l, key)
		before := lease.Token()
		t0 := time.Now()
		restarted := make(chan error, 1)
		go func() { restarted <- srv.Restart(context.Background()) }()
		checkLoss(t, "server restart", t0, lease, errc, doneAt, lossBound)
		if err := <-restarted; err != nil {
			t.Fatalf("Restart: %v", err)
		}
		t.Logf("restart took %v", time.Since(t0))
		again, err := l.Lock(timeout(t, 30*time.Second), key)
		if err != nil {
			t.Fatalf("Lock after restart: %v", err)
		}
		t.Logf("fencing token %d before the restart, %d after", before, again.Token())
		if again.Token() <= before {
			t.Errorf("token %d after the restart, %d before", again.Token(), before)
		}
		if err := again.Release(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPgBouncerTransactionMode: through a transaction-mode pooler a session
// lock is refused or reported lost with ErrPooler, never silently held; the
// transaction locks of txlock work through the same pooler.
func TestPgBouncerTransactionMode(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		dsn := itest.StartPgBouncer(t, itest.Shared(t), itest.PoolTransaction)
		db := itest.OpenDSN(t, driver, dsn(e.dbname))
		l := advisory.New(db, advisory.WithKeepAlive(200*time.Millisecond))
		ctx := timeout(t, 60*time.Second)
		key := testKey(t)
		warmPooler(t, ctx, db)
		lease, err := l.Lock(ctx, key)
		switch {
		case errors.Is(err, advisory.ErrPooler):
			t.Logf("Lock refused: %v", err)
		case err != nil:
			t.Fatalf("Lock through pgbouncer: %v", err)
		default:
			select {
			case <-lease.Lost():
				t.Logf("lease lost: %v", lease.Err())
			case <-time.After(10 * time.Second):
				t.Fatal("a session lock through a transaction pooler was neither refused nor lost")
			}
			if !errors.Is(lease.Err(), advisory.ErrPooler) {
				t.Fatalf("Err = %v, want ErrPooler", lease.Err())
			}
			if err := lease.Release(ctx); !errors.Is(err, advisory.ErrPooler) {
				t.Fatalf("Release = %v, want the ErrPooler loss", err)
			}
		}
		// Nothing is left held by the pooler's server sessions (which
		// outlive the client connections, so the cleanup's check would not
		// see a lock left there), and transaction locks work through the
		// same pooler.
		testkit.WaitNoAdvisoryLocks(t, e.admin)
		var inside []int
		err = txlock.Do(ctx, db, key, func(tx *sql.Tx) error {
			var pid int
			if err := tx.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				return err
			}
			inside = e.holders(t, key)
			if len(inside) != 1 || inside[0] != pid {
				t.Errorf("inside txlock.Do: holders %v, transaction's backend %d", inside, pid)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("txlock.Do through pgbouncer: %v", err)
		}
	})
}

// TestPgBouncerTransactionModeFenced: as TestPgBouncerTransactionMode, with
// fencing, whose acquire lib/pq sends as a session-level prepared statement:
// a statement prepared on one backend and executed on another is reported
// as the pooler it is (ErrPooler), as is a lease taken anyway.
func TestPgBouncerTransactionModeFenced(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		if err := advisory.CreateFenceTable(timeout(t, 30*time.Second), e.admin, ""); err != nil {
			t.Fatal(err)
		}
		dsn := itest.StartPgBouncer(t, itest.Shared(t), itest.PoolTransaction)
		db := itest.OpenDSN(t, driver, dsn(e.dbname))
		l := advisory.New(db, advisory.WithKeepAlive(200*time.Millisecond), advisory.WithFencing(""))
		ctx := timeout(t, 60*time.Second)
		warmPooler(t, ctx, db)
		refused, lost := 0, 0
		for i := range 6 {
			lease, err := l.Lock(ctx, keyspace.Pair(7002, int32(i)))
			switch {
			case errors.Is(err, advisory.ErrPooler):
				refused++
				t.Logf("Lock refused: %v", err)
				continue
			case err != nil:
				t.Fatalf("Lock through pgbouncer: %v, want ErrPooler or a lease", err)
			}
			select {
			case <-lease.Lost():
				lost++
			case <-time.After(10 * time.Second):
				t.Fatal("a fenced session lock through a transaction pooler was neither refused nor lost")
			}
			if err := lease.Release(ctx); !errors.Is(err, advisory.ErrPooler) {
				t.Fatalf("Release = %v, want the ErrPooler loss", err)
			}
		}
		t.Logf("6 fenced locks through a transaction pooler: %d refused, %d lost", refused, lost)
		testkit.WaitNoAdvisoryLocks(t, e.admin)
	})
}
