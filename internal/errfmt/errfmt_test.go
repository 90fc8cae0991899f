package errfmt_test

import (
	"context"
	"errors"
	"testing"

	"github.com/pgadvisory/pgadvisory/internal/errfmt"
)

var errSentinel = errors.New("pkg: lock held by another session")

func TestErrorf(t *testing.T) {
	cause := errors.New("pkg: keepalive: timeout")
	err := errfmt.Errorf("pkg: ", "pkg: lock %d: %w: %w", 42, errSentinel, cause)
	if got, want := err.Error(), "pkg: lock 42: lock held by another session: keepalive: timeout"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, errSentinel) || !errors.Is(err, cause) {
		t.Fatalf("the chain lost a wrapped error: %v", err)
	}
	// Wrapped again, by the same package or another.
	outer := errfmt.Errorf("pkg: ", "pkg: release: %w", err)
	if got, want := outer.Error(), "pkg: release: lock 42: lock held by another session: keepalive: timeout"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(outer, errSentinel) {
		t.Fatal("the chain lost the sentinel")
	}
	// Nothing to drop: the error is fmt's own.
	plain := errfmt.Errorf("pkg: ", "pkg: lock %d: %w", 7, context.Canceled)
	if got := plain.Error(); got != "pkg: lock 7: context canceled" || !errors.Is(plain, context.Canceled) {
		t.Fatalf("plain = %q", got)
	}
	// Another package's prefix stays.
	other := errfmt.Errorf("mw: ", "mw: busy: %w", errSentinel)
	if got := other.Error(); got != "mw: busy: pkg: lock held by another session" {
		t.Fatalf("other = %q", got)
	}
}
