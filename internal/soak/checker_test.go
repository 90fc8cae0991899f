package soak

import (
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	sec := func(holder, key string, from, to int, o Outcome) Section {
		return Section{Holder: holder, Key: key, Enter: at(from), Exit: at(to), Outcome: o}
	}
	lost := func(s Section, lostAt int) Section { s.LostAt = at(lostAt); s.Outcome = Lost; return s }
	shared := func(s Section) Section { s.Shared = true; return s }
	tests := []struct {
		name                string
		in                  []Section
		violations, windows int
		maxWindow           time.Duration
	}{
		{"empty", nil, 0, 0, 0},
		{"back to back", []Section{sec("a", "k", 0, 10, Confirmed), sec("b", "k", 10, 20, Confirmed)}, 0, 0, 0},
		{"confirmed overlap", []Section{sec("a", "k", 0, 10, Confirmed), sec("b", "k", 5, 20, Confirmed)}, 1, 0, 0},
		{"contained", []Section{sec("a", "k", 0, 100, Confirmed), sec("b", "k", 10, 20, Confirmed)}, 1, 0, 0},
		{"other key", []Section{sec("a", "k", 0, 10, Confirmed), sec("b", "j", 5, 20, Confirmed)}, 0, 0, 0},
		{"loss window", []Section{lost(sec("a", "k", 0, 50, Confirmed), 30), sec("b", "k", 20, 40, Confirmed)}, 0, 1, 10 * time.Millisecond},
		{"loss noticed before the next entered", []Section{lost(sec("a", "k", 0, 50, Confirmed), 15), sec("b", "k", 20, 40, Confirmed)}, 0, 0, 0},
		{"unverified", []Section{sec("a", "k", 0, 30, Unverified), sec("b", "k", 20, 40, Confirmed)}, 0, 1, 10 * time.Millisecond},
		{"shared overlap", []Section{shared(sec("a", "k", 0, 30, Confirmed)), shared(sec("b", "k", 20, 40, Confirmed))}, 0, 0, 0},
		{"shared and exclusive", []Section{shared(sec("a", "k", 0, 30, Confirmed)), sec("b", "k", 20, 40, Confirmed)}, 1, 0, 0},
		{"three deep", []Section{sec("a", "k", 0, 100, Confirmed), sec("b", "k", 10, 90, Confirmed), sec("c", "k", 20, 30, Confirmed)}, 3, 0, 0},
		{"pruned", []Section{sec("a", "k", 0, 10, Confirmed), sec("b", "k", 10, 20, Confirmed), sec("c", "k", 20, 30, Confirmed)}, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Recorder
			// Record in reverse to show that order of recording does not matter.
			for i := len(tt.in) - 1; i >= 0; i-- {
				r.Add(tt.in[i])
			}
			rep := Check(r.Sections())
			if len(rep.Violations) != tt.violations || len(rep.Windows) != tt.windows || rep.MaxWindow != tt.maxWindow {
				t.Fatalf("got %d violations, %d windows (max %v); want %d, %d (max %v)\n%v",
					len(rep.Violations), len(rep.Windows), rep.MaxWindow, tt.violations, tt.windows, tt.maxWindow, rep)
			}
			if rep.Sections != len(tt.in) {
				t.Fatalf("Sections = %d, want %d", rep.Sections, len(tt.in))
			}
		})
	}
}
