package advisory_test

import (
	"context"
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

func TestDo(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		var logs syncBuffer
		var released int
		l := advisory.New(e.db,
			advisory.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
			advisory.WithHooks(advisory.Hooks{Released: func(keyspace.Key, bool, time.Duration) { released++ }}))
		ctx := timeout(t, 30*time.Second)
		key := testKey(t)
		boom := errors.New("boom")
		err := l.Do(ctx, key, func(ctx context.Context) error {
			lease, ok := advisory.LeaseFromContext(ctx)
			if !ok || lease.Key() != key {
				t.Errorf("LeaseFromContext = %v, %v", lease, ok)
			}
			if got := e.holders(t, key); len(got) != 1 || got[0] != lease.PID() {
				t.Errorf("holders inside Do: %v", got)
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Do = %v, want fn's error", err)
		}
		if got := e.holders(t, key); len(got) != 0 {
			t.Fatalf("held after Do: %v", got)
		}
		if err := l.Do(ctx, key, func(context.Context) error { return nil }); err != nil {
			t.Fatal(err)
		}
		// A panicking fn still releases.
		func() {
			defer func() { _ = recover() }()
			_ = l.Do(ctx, key, func(context.Context) error { panic("fn panics") })
		}()
		if got := e.holders(t, key); len(got) != 0 {
			t.Fatalf("held after a panic in Do: %v", got)
		}
		if released != 3 {
			t.Fatalf("Released hook ran %d times, want 3", released)
		}
		if _, ok := advisory.LeaseFromContext(ctx); ok {
			t.Fatal("LeaseFromContext outside Do")
		}
		if s := logs.String(); !strings.Contains(s, "lock acquired") || !strings.Contains(s, "lock released") {
			t.Fatalf("logs: %s", s)
		}
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
