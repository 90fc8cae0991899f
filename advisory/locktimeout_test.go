package advisory_test

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
)

// TestLockTimeoutAtGrant: the server can grant a session lock and still
// fail the statement that waited for it with lock_timeout (SQLSTATE 55P03),
// when the holder releases as the timeout fires; the session lock survives
// the failed statement. A Lock that returns ErrLockTimeout must then leave
// nothing held: its connection must not go back to the pool with the lock.
// The holder releases at random moments around the timeout, many times; the
// test stops at the first lock left held.
func TestLockTimeoutAtGrant(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 2*time.Minute)
		const wait = 10 * time.Millisecond
		trials := envInt(t, "PGADVISORY_TIMEOUT_TRIALS", 200)
		l := advisory.New(e.db, advisory.WithLockTimeout(wait))
		holder, err := e.admin.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Close()
		key := testKey(t)
		k, _ := key.Int64()
		timeouts, granted := 0, 0
		for i := range trials {
			if _, err := holder.ExecContext(ctx, "SELECT pg_advisory_lock($1::int8)", k); err != nil {
				t.Fatal(err)
			}
			res := make(chan error, 1)
			var ls *advisory.Lease
			go func() {
				var err error
				ls, err = l.Lock(ctx, key)
				res <- err
			}()
			// The wait starts after a try on a multiplexed session and one on
			// the waiting connection: release somewhere around its end.
			time.Sleep(wait - 2*time.Millisecond + time.Duration(rand.IntN(6000))*time.Microsecond)
			if _, err := holder.ExecContext(ctx, "SELECT pg_advisory_unlock($1::int8)", k); err != nil {
				t.Fatal(err)
			}
			err := <-res
			switch {
			case err == nil:
				granted++
				if err := ls.Release(ctx); err != nil {
					t.Fatal(err)
				}
				continue
			case !errors.Is(err, advisory.ErrLockTimeout):
				t.Fatalf("trial %d: Lock: %v, want ErrLockTimeout or a lease", i, err)
			}
			timeouts++
			// A connection that was discarded takes a moment to end its
			// backend; a lock left on a pooled connection stays.
			deadline := time.Now().Add(2 * time.Second)
			for {
				pids := e.holders(t, key)
				if len(pids) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("trial %d: Lock returned %v, and backend %v still holds %v", i, err, pids, key)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		t.Logf("%s: %d trials: %d leases, %d timeouts", driver, trials, granted, timeouts)
	})
}
