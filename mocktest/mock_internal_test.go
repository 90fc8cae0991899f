package mocktest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// fakeT records what the mock reports, and runs cleanups on demand.
type fakeT struct {
	errors   []string
	cleanups []func()
}

func (f *fakeT) Helper()                   {}
func (f *fakeT) Cleanup(fn func())         { f.cleanups = append(f.cleanups, fn) }
func (f *fakeT) Errorf(s string, a ...any) { f.errors = append(f.errors, fmt.Sprintf(s, a...)) }
func (f *fakeT) Fatalf(s string, a ...any) { f.Errorf(s, a...) }
func (f *fakeT) end() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// TestUnmetFailsTheTest: an expectation left unmet fails the test at cleanup,
// and a met one does not.
func TestUnmetFailsTheTest(t *testing.T) {
	ft := &fakeT{}
	_, m := newMock(ft)
	m.ExpectLock(keyspace.Int64(1))
	ft.end()
	if len(ft.errors) != 1 || !strings.Contains(ft.errors[0], "mocktest:") {
		t.Fatalf("unmet expectation reported as %q", ft.errors)
	}

	ft = &fakeT{}
	newMock(ft)
	ft.end()
	if len(ft.errors) != 0 {
		t.Fatalf("no expectations, yet reported %q", ft.errors)
	}
}

// TestPIDs: each acquire expectation answers with a new backend pid, and the
// keepalive with the latest.
func TestPIDs(t *testing.T) {
	_, m := New(t)
	if m.PID() != firstPID-1 {
		t.Fatalf("PID before any acquire = %d", m.PID())
	}
	first := m.nextPID()
	if m.nextPID() != first+1 || m.PID() != first+1 {
		t.Fatal("pids are not allocated in sequence")
	}
}
