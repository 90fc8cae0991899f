package advisory_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// events records what Hooks.Acquire and Hooks.Queued report.
type events struct {
	mu     sync.Mutex
	acq    []advisory.AcquireEvent
	queued []int // ahead, per Queued call
}

func (ev *events) hooks() advisory.Hooks {
	return advisory.Hooks{
		Acquire: func(_ context.Context, e advisory.AcquireEvent) {
			ev.mu.Lock()
			ev.acq = append(ev.acq, e)
			ev.mu.Unlock()
		},
		Queued: func(_ keyspace.Key, _ bool, ahead int) {
			ev.mu.Lock()
			ev.queued = append(ev.queued, ahead)
			ev.mu.Unlock()
		},
	}
}

// last returns the last Acquire event, and how many there were.
func (ev *events) last() (advisory.AcquireEvent, int) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if len(ev.acq) == 0 {
		return advisory.AcquireEvent{}, 0
	}
	return ev.acq[len(ev.acq)-1], len(ev.acq)
}

// TestObserveAcquire: Hooks.Acquire reports every outcome of a scripted
// scenario (acquired, busy in memory and on the server, timeout, cancelled
// in the queue, a handoff after a wait in the queue, LockAll), with the
// mode, whether it queued and for how long; Hooks.Queued runs when a
// goroutine starts to wait in the queue.
func TestObserveAcquire(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 30*time.Second)
		var ev, ev2 events
		l := advisory.New(e.db, advisory.WithHooks(ev.hooks()), advisory.WithHandoff(8, time.Hour))
		other := advisory.New(e.db, advisory.WithHooks(ev2.hooks()), advisory.WithLockTimeout(50*time.Millisecond))
		key := testKey(t)
		check := func(ev *events, wantN int, want advisory.AcquireEvent) advisory.AcquireEvent {
			t.Helper()
			got, n := ev.last()
			if n != wantN || got.Key != want.Key || got.Keys != want.Keys || got.Shared != want.Shared || got.Try != want.Try ||
				got.Outcome != want.Outcome || got.Queued != want.Queued || got.HandedOver != want.HandedOver ||
				(got.Err == nil) != (want.Outcome == advisory.Acquired) || got.Wait <= 0 || got.QueueWait > got.Wait ||
				(got.QueueWait > 0) != got.Queued {
				t.Fatalf("event %d: %+v\nwant %d: %+v", n, got, wantN, want)
			}
			return got
		}

		held, err := l.Lock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		check(&ev, 1, advisory.AcquireEvent{Key: key, Keys: 1, Outcome: advisory.Acquired})
		if _, err := l.TryLockShared(ctx, key); !errors.Is(err, advisory.ErrNotAcquired) {
			t.Fatalf("TryLockShared of a key held in the process: %v", err)
		}
		check(&ev, 2, advisory.AcquireEvent{Key: key, Keys: 1, Shared: true, Try: true, Outcome: advisory.Busy})
		if _, err := other.TryLock(ctx, key); !errors.Is(err, advisory.ErrNotAcquired) {
			t.Fatalf("TryLock of a key held by another Locker: %v", err)
		}
		check(&ev2, 1, advisory.AcquireEvent{Key: key, Keys: 1, Try: true, Outcome: advisory.Busy})
		if _, err := other.Lock(ctx, key); !errors.Is(err, advisory.ErrLockTimeout) {
			t.Fatalf("Lock with a lock timeout of a key held elsewhere: %v", err)
		}
		check(&ev2, 2, advisory.AcquireEvent{Key: key, Keys: 1, Outcome: advisory.Timeout})

		// Cancelled while queued behind the holder.
		cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		_, err = l.Lock(cctx, key)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock behind the holder with a deadline: %v", err)
		}
		got := check(&ev, 3, advisory.AcquireEvent{Key: key, Keys: 1, Outcome: advisory.Cancelled, Queued: true})
		if got.QueueWait < 20*time.Millisecond {
			t.Errorf("cancelled in the queue after %v, want about 30 ms", got.QueueWait)
		}

		// Queued, then handed the held lock.
		done := make(chan *advisory.Lease)
		go func() {
			ls, err := l.Lock(ctx, key)
			if err != nil {
				t.Error(err)
			}
			done <- ls
		}()
		waitFor(t, 10*time.Second, "a waiter in the queue", func() bool { return l.Stats().Queued == 1 })
		w := l.Waiting()
		if len(w) != 1 || w[0].Key != key || w[0].Holders != 1 || !w[0].Exclusive || len(w[0].Waiters) != 1 || w[0].Waiters[0].Shared {
			t.Fatalf("Waiting = %+v, want %v held with one exclusive waiter", w, key)
		}
		time.Sleep(5 * time.Millisecond)
		if err := held.Release(ctx); err != nil {
			t.Fatal(err)
		}
		next := <-done
		got = check(&ev, 4, advisory.AcquireEvent{Key: key, Keys: 1, Outcome: advisory.Acquired, Queued: true, HandedOver: true})
		if got.QueueWait < 5*time.Millisecond {
			t.Errorf("queued for %v, want at least 5 ms", got.QueueWait)
		}
		ev.mu.Lock()
		if len(ev.queued) != 2 || ev.queued[0] != 0 || ev.queued[1] != 0 {
			t.Errorf("Queued hook: %v, want two calls with nobody ahead", ev.queued)
		}
		ev.mu.Unlock()
		if err := next.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if w := l.Waiting(); len(w) != 0 {
			t.Errorf("Waiting = %+v after every grant", w)
		}

		k2 := testKey(t)
		all, err := l.LockAll(ctx, key, k2)
		if err != nil {
			t.Fatal(err)
		}
		first := keyspace.Compare(key, k2)
		want := key
		if first > 0 {
			want = k2
		}
		check(&ev, 5, advisory.AcquireEvent{Key: want, Keys: 2, Outcome: advisory.Acquired})
		if err := all.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// TestStats: Stats counts held leases, waiters in the process's queue and
// on the server, and sessions by kind, on both kinds of Locker, and comes
// back to zero when everything is released, lost or idle.
func TestStats(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 30*time.Second)
		for _, tc := range []struct {
			name string
			opts []advisory.Option
		}{{"multiplexed", nil}, {"dedicated", []advisory.Option{advisory.WithDedicatedSessions()}}} {
			t.Run(tc.name, func(t *testing.T) {
				l := advisory.New(e.db, append(tc.opts, advisory.WithKeepAlive(50*time.Millisecond))...)
				other := advisory.New(e.db, tc.opts...)
				if st := l.Stats(); st != (advisory.Stats{}) {
					t.Fatalf("new Locker: %+v", st)
				}
				k1, k2 := testKey(t), testKey(t)
				a, err := l.Lock(ctx, k1)
				if err != nil {
					t.Fatal(err)
				}
				b, err := l.LockShared(ctx, k2)
				if err != nil {
					t.Fatal(err)
				}
				st := l.Stats()
				if st.Held != 2 || st.Queued != 0 || st.WaitingOnServer != 0 {
					t.Fatalf("two leases: %+v", st)
				}
				if tc.name == "multiplexed" && (st.Multiplexed < 1 || st.Dedicated != 0) ||
					tc.name == "dedicated" && (st.Dedicated != 2 || st.Multiplexed != 0) {
					t.Fatalf("sessions: %+v", st)
				}
				// One goroutine queued in the process, one of another
				// Locker waiting on the server.
				errs := make(chan error, 2)
				for _, lk := range []*advisory.Locker{l, other} {
					go func() {
						ls, err := lk.Lock(ctx, k1)
						if err == nil {
							err = ls.Release(ctx)
						}
						errs <- err
					}()
				}
				waitFor(t, 10*time.Second, "one waiter of each kind", func() bool {
					return l.Stats().Queued == 1 && other.Stats().WaitingOnServer == 1
				})
				if err := a.Release(ctx); err != nil {
					t.Fatal(err)
				}
				for range 2 {
					if err := <-errs; err != nil {
						t.Fatal(err)
					}
				}
				// A lost lease is no longer held.
				e.terminate(t, b.PID())
				select {
				case <-b.Lost():
				case <-ctx.Done():
					t.Fatal("loss not seen")
				}
				_ = b.Release(ctx)
				waitFor(t, 10*time.Second, "Stats back to zero", func() bool {
					return now(l.Stats()) == advisory.Stats{} && now(other.Stats()) == advisory.Stats{}
				})
			})
		}
	})
}

// TestWaitingJSON: Waiting encodes for a debug endpoint, with the key by
// name in a registered namespace, longest waiter first; a nil Locker has
// nobody waiting and zero Stats.
func TestWaitingJSON(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 30*time.Second)
		ns := keyspace.MustNamespace("advisory-waiting-test", 1_700_000_031)
		l := advisory.New(e.db)
		keys := []keyspace.Key{ns.ID(7), testKey(t)}
		var leases []*advisory.Lease
		for _, k := range keys {
			ls, err := l.Lock(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			leases = append(leases, ls)
		}
		wctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for i, k := range keys {
			for range 2 - i { // 2 waiters for the first key, 1 for the second
				wg.Go(func() {
					if _, err := l.LockShared(wctx, k); !errors.Is(err, context.Canceled) {
						t.Errorf("LockShared: %v, want cancelled", err)
					}
				})
				waitFor(t, 10*time.Second, "the waiter", func() bool { return advisory.QueueWaiting(l, k) > 0 })
			}
		}
		waitFor(t, 10*time.Second, "3 waiters", func() bool { return l.Stats().Queued == 3 })
		b, err := json.Marshal(l.Waiting())
		if err != nil {
			t.Fatal(err)
		}
		var got []struct {
			Key       string `json:"key"`
			Namespace string `json:"namespace"`
			Holders   int    `json:"holders"`
			Exclusive bool   `json:"exclusive"`
			Waiters   []struct {
				Shared bool  `json:"shared"`
				Waited int64 `json:"waited_ns"`
			} `json:"waiters"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].Key != "advisory-waiting-test/7" || got[0].Namespace != "advisory-waiting-test" ||
			got[0].Holders != 1 || !got[0].Exclusive || len(got[0].Waiters) != 2 || !got[0].Waiters[0].Shared ||
			got[0].Waiters[0].Waited < got[0].Waiters[1].Waited || got[1].Key != keys[1].String() || got[1].Namespace != "" ||
			len(got[1].Waiters) != 1 {
			t.Fatalf("Waiting as JSON: %s", b)
		}
		cancel()
		wg.Wait()
		for _, ls := range leases {
			if err := ls.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		var nilLocker *advisory.Locker
		if w, st := nilLocker.Waiting(), nilLocker.Stats(); w != nil || st != (advisory.Stats{}) {
			t.Fatalf("nil Locker: %v %+v", w, st)
		}
	})
}

// TestLogValue: a Lease logs its key by name, mode, pid and state; a Locker
// logs its Stats; the Locker's own records name keys the same way.
func TestLogValue(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 30*time.Second)
		ns := keyspace.MustNamespace("advisory-logvalue-test", 1_700_000_032)
		var own bytes.Buffer
		l := advisory.New(e.db, advisory.WithLogger(slog.New(slog.NewJSONHandler(&own, &slog.HandlerOptions{Level: slog.LevelDebug}))))
		ls, err := l.LockShared(ctx, ns.ID(42))
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		log := slog.New(slog.NewJSONHandler(&buf, nil))
		log.Info("holding", "lease", ls, "locker", l)
		var rec struct {
			Lease  map[string]any `json:"lease"`
			Locker map[string]any `json:"locker"`
		}
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
			t.Fatalf("%v: %s", err, buf.Bytes())
		}
		if rec.Lease["key"] != "advisory-logvalue-test/42" || rec.Lease["mode"] != "shared" || rec.Lease["state"] != "held" ||
			rec.Lease["pid"] != float64(ls.PID()) || rec.Lease["held"] == nil {
			t.Errorf("lease logged as %s", buf.Bytes())
		}
		if rec.Locker["held"] != float64(1) || rec.Locker["queued"] != float64(0) {
			t.Errorf("locker logged as %s", buf.Bytes())
		}
		if err := ls.Release(ctx); err != nil {
			t.Fatal(err)
		}
		buf.Reset()
		log.Info("done", "lease", ls)
		if !strings.Contains(buf.String(), `"state":"released"`) {
			t.Errorf("released lease logged as %s", buf.Bytes())
		}
		if !strings.Contains(own.String(), `"key":"advisory-logvalue-test/42"`) {
			t.Errorf("the Locker's records do not name the key: %s", own.Bytes())
		}
		buf.Reset()
		var nilLease *advisory.Lease
		log.Info("nil", "lease", nilLease)
		if !strings.Contains(buf.String(), `"lease":"<nil>"`) {
			t.Errorf("nil lease logged as %s", buf.Bytes())
		}
	})
}

// now is st without its counters since New (Batches, BatchedOps): what the
// Locker holds and who waits at this moment.
func now(st advisory.Stats) advisory.Stats {
	st.Batches, st.BatchedOps = 0, 0
	return st
}
