package middleware_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/middleware"
)

// TestSingleton runs a job from 5 runners (each with its own Locker, as
// separate processes would) at once, for several rounds: in each round
// exactly one runs it and the other four report ErrSkipped. The winner keeps
// the lock until the four have been refused, so no runner can come late
// enough to win the same round again.
func TestSingleton(t *testing.T) {
	const runners, rounds = 5, 6
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		key := keyspace.Hash("middleware-test:daily-report")
		winners := map[int]int{}
		for round := range rounds {
			var ran, skipped atomic.Int64
			allRefused := make(chan struct{})
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range runners {
				job := middleware.Singleton(advisory.New(e.db), key, func(ctx context.Context) error {
					ran.Add(1)
					if middleware.Lease(ctx) == nil {
						return errors.New("no lease in the job's context")
					}
					select {
					case <-allRefused:
						return nil
					case <-time.After(20 * time.Second):
						return fmt.Errorf("round %d: the other runners were not refused within 20 s", round)
					}
				})
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					err := job(timeout(t, 30*time.Second))
					switch {
					case errors.Is(err, middleware.ErrSkipped):
						if skipped.Add(1) == runners-1 {
							close(allRefused)
						}
					case err != nil:
						t.Errorf("runner %d: %v", i, err)
					default:
						winners[i]++ // one winner per round: no race
					}
				}()
			}
			close(start)
			wg.Wait()
			if ran.Load() != 1 || skipped.Load() != runners-1 {
				t.Fatalf("round %d: %d ran, %d skipped; want 1 and %d", round, ran.Load(), skipped.Load(), runners-1)
			}
		}
		t.Logf("%d rounds of %d runners, one ran each round; wins by runner: %v", rounds, runners, winners)
		t.Run("lost", func(t *testing.T) { singletonLost(t, e) })
	})
}

// singletonLost checks that a job whose lock is lost sees its context
// cancelled with ErrLockLost and that the wrapper reports the loss.
func singletonLost(t *testing.T, e *env) {
	pids := make(chan int, 1)
	job := middleware.Singleton(advisory.New(e.db, advisory.WithKeepAlive(100*time.Millisecond)), keyspace.Hash("middleware-test:lost"),
		func(ctx context.Context) error {
			pids <- middleware.Lease(ctx).PID()
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-time.After(20 * time.Second):
				return errors.New("not cancelled")
			}
		})
	errc := make(chan error, 1)
	go func() { errc <- job(context.Background()) }()
	testkit.TerminateBackend(t, e.admin, <-pids)
	if err := <-errc; !errors.Is(err, advisory.ErrLockLost) {
		t.Fatalf("job returned %v, want advisory.ErrLockLost", err)
	}
}

// TestKeyed sends 5 messages for each of 4 keys through two Keyed (two
// "processes" with their own pools): messages of one key never overlap, and
// messages of different keys do run at the same time.
func TestKeyed(t *testing.T) {
	const keys, perKey = 4, 5
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		other := itest.OpenDSN(t, driver, e.dsn)
		t.Cleanup(func() { testkit.WaitConnsIdle(t, other) })
		consumers := []*middleware.Keyed{middleware.NewKeyed(advisory.New(e.db)), middleware.NewKeyed(advisory.New(other))}

		var (
			active      [keys]atomic.Int64
			running     atomic.Int64
			maxRunning  atomic.Int64
			violations  atomic.Int64
			firsts      [keys]sync.Once
			arrived     atomic.Int64
			allArrived  = make(chan struct{})
			ctx         = timeout(t, 60*time.Second)
			wg          sync.WaitGroup
			start       = time.Now()
			workPerCall = 5 * time.Millisecond
		)
		for k := range keys {
			for m := range perKey {
				wg.Add(1)
				go func() {
					defer wg.Done()
					key := orders.ID(int32(100 + k))
					err := consumers[(k+m)%2].Handle(ctx, key, func(ctx context.Context) error {
						if active[k].Add(1) != 1 {
							violations.Add(1)
						}
						defer active[k].Add(-1)
						n := running.Add(1)
						defer running.Add(-1)
						for cur := maxRunning.Load(); n > cur && !maxRunning.CompareAndSwap(cur, n); cur = maxRunning.Load() {
						}
						// The first message of each key waits until the first
						// message of every key runs: if keys were serialised,
						// this would time out.
						firsts[k].Do(func() {
							if arrived.Add(1) == keys {
								close(allArrived)
							}
							select {
							case <-allArrived:
							case <-ctx.Done():
							}
						})
						time.Sleep(workPerCall) // simulated work, not synchronisation
						return nil
					})
					if err != nil {
						t.Errorf("key %d message %d: %v", k, m, err)
					}
				}()
			}
		}
		wg.Wait()
		if violations.Load() != 0 {
			t.Fatalf("%d times two messages of one key ran at once", violations.Load())
		}
		select {
		case <-allArrived:
		default:
			t.Fatal("the first messages of the keys did not all run at the same time")
		}
		if maxRunning.Load() < 2 {
			t.Fatalf("at most %d message ran at a time, want keys in parallel", maxRunning.Load())
		}
		t.Logf("%d messages over %d keys in %v: at most %d at once, never two of one key",
			keys*perKey, keys, time.Since(start).Round(time.Millisecond), maxRunning.Load())
		t.Run("hot key pins one connection", func(t *testing.T) { hotKey(t, itest.OpenDSN(t, driver, e.dsn)) })
	})
}

// hotKey sends 10 messages of one key at once through one Keyed: they queue
// in memory, so while one runs the pool has one connection in use (the
// lease's), not one per waiting message.
func hotKey(t *testing.T, db *sql.DB) {
	k := middleware.NewKeyed(advisory.New(db))
	ctx := timeout(t, 30*time.Second)
	var maxInUse atomic.Int64
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := k.Handle(ctx, orders.ID(200), func(ctx context.Context) error {
				n := int64(db.Stats().InUse)
				for cur := maxInUse.Load(); n > cur && !maxInUse.CompareAndSwap(cur, n); cur = maxInUse.Load() {
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if maxInUse.Load() != 1 {
		t.Fatalf("%d connections in use while a message of the hot key ran, want 1", maxInUse.Load())
	}
}

// TestSkippedError checks the error of a job that another session holds:
// it matches ErrSkipped and advisory.ErrNotAcquired, names the package once,
// and names the job as the user did: by name for SingletonNamed, by key for
// Singleton.
func TestSkippedError(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		locker := advisory.New(e.db)
		job := func(context.Context) error { return errors.New("ran while another session held the lock") }
		key := keyspace.Hash("middleware-test:nightly")
		cases := []struct {
			name string
			run  func(context.Context) error
			want string
		}{
			{"SingletonNamed", middleware.SingletonNamed(locker, "middleware-test:nightly", job),
				`middleware: job "middleware-test:nightly" skipped: another session holds its lock`},
			{"Singleton", middleware.Singleton(locker, key, job),
				"middleware: job on lock " + key.String() + " skipped: another session holds its lock"},
		}
		e.hold(t, key)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				err := tc.run(timeout(t, 10*time.Second))
				if !errors.Is(err, middleware.ErrSkipped) || !errors.Is(err, advisory.ErrNotAcquired) {
					t.Fatalf("got %v; want ErrSkipped and advisory.ErrNotAcquired", err)
				}
				if err.Error() != tc.want {
					t.Fatalf("message %q\nwant      %q", err, tc.want)
				}
			})
		}
	})
}
