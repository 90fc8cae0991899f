// Package soak checks that a lock gave mutual exclusion. A Recorder collects
// the critical sections that any number of goroutines ran under a lock, and
// Check finds every pair that overlapped on the same key while both holders
// believed they held it.
//
// A holder believes from the moment its section starts until the section
// ends or the holder learns that the lock was lost, whichever comes first.
// Sections are sorted into three outcomes: Confirmed (the lock was verified
// held for the whole section, e.g. the release found it still held on the
// same session), Lost (the holder was told of a loss) and Unverified
// (anything else). Two Confirmed sections that overlap are a violation of
// mutual exclusion, always. An overlap with a Lost or Unverified section is
// the window between the server ending a session and its client noticing:
// it is reported separately, with its length, because no lock service can
// close it (only fencing can).
//
// The package is used by this module's soak test; it imports nothing of the
// module and holds no PostgreSQL code.
package soak

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Outcome is what is known about a section's lock at its end.
type Outcome int

// The outcomes of a section.
const (
	// Unverified: the section ended without a verdict on the lock (the
	// release failed, the connection broke).
	Unverified Outcome = iota
	// Confirmed: the lock was verified held from before Enter to after Exit.
	Confirmed
	// Lost: the holder was told, at LostAt, that the lock was lost.
	Lost
)

func (o Outcome) String() string {
	switch o {
	case Confirmed:
		return "confirmed"
	case Lost:
		return "lost"
	}
	return "unverified"
}

// Section is one critical section.
type Section struct {
	Holder  string    // who ran it (worker name)
	Key     string    // what it locked
	Shared  bool      // held in shared mode: shared sections may overlap each other
	Enter   time.Time // first instant inside the section
	Exit    time.Time // last instant inside the section
	LostAt  time.Time // when the holder learned of a loss; zero if it did not
	Outcome Outcome
	PID     int // the holder's server session (backend pid), to match faults to sections; optional
}

// BelievedUntil is the end of the holder's belief: Exit, or LostAt if the
// holder learned of a loss before Exit.
func (s Section) BelievedUntil() time.Time {
	if !s.LostAt.IsZero() && s.LostAt.Before(s.Exit) {
		return s.LostAt
	}
	return s.Exit
}

func (s Section) String() string {
	return fmt.Sprintf("%s on %s [%s +%v] %s", s.Holder, s.Key, s.Enter.Format("15:04:05.000000"),
		s.BelievedUntil().Sub(s.Enter), s.Outcome)
}

// Recorder collects sections. It is safe for concurrent use.
type Recorder struct {
	mu       sync.Mutex
	sections []Section
}

// Add records one section.
func (r *Recorder) Add(s Section) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sections = append(r.sections, s)
}

// Sections returns a copy of what was recorded.
func (r *Recorder) Sections() []Section {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sections)
}

// Overlap is two sections on one key whose belief intervals intersect,
// at least one of them exclusive. A entered first.
type Overlap struct {
	A, B     Section
	Duration time.Duration // length of the intersection
}

func (o Overlap) String() string {
	return fmt.Sprintf("%v overlaps %v by %v", o.A, o.B, o.Duration)
}

// Report is the verdict over a set of sections.
type Report struct {
	Sections   int
	ByOutcome  map[Outcome]int
	Violations []Overlap // both sections Confirmed: mutual exclusion failed
	Windows    []Overlap // at least one section Lost or Unverified
	MaxWindow  time.Duration
}

// Check compares every pair of sections on the same key and returns what
// overlapped. It runs in O(n log n + overlaps) per key.
func Check(sections []Section) Report {
	rep := Report{Sections: len(sections), ByOutcome: map[Outcome]int{}}
	byKey := map[string][]Section{}
	for _, s := range sections {
		rep.ByOutcome[s.Outcome]++
		byKey[s.Key] = append(byKey[s.Key], s)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		ss := byKey[k]
		slices.SortFunc(ss, func(a, b Section) int { return a.Enter.Compare(b.Enter) })
		// active holds the sections whose belief may still reach a later
		// Enter; pruned as the sweep passes their end.
		var active []Section
		for _, s := range ss {
			kept := active[:0]
			for _, a := range active {
				if a.BelievedUntil().After(s.Enter) {
					kept = append(kept, a)
				}
			}
			active = kept
			for _, a := range active {
				if a.Shared && s.Shared {
					continue
				}
				end := a.BelievedUntil()
				if e := s.BelievedUntil(); e.Before(end) {
					end = e
				}
				if !end.After(s.Enter) {
					continue // s learned of its loss before it even started
				}
				o := Overlap{A: a, B: s, Duration: end.Sub(s.Enter)}
				if a.Outcome == Confirmed && s.Outcome == Confirmed {
					rep.Violations = append(rep.Violations, o)
				} else {
					rep.Windows = append(rep.Windows, o)
					rep.MaxWindow = max(rep.MaxWindow, o.Duration)
				}
			}
			active = append(active, s)
		}
	}
	return rep
}

// String summarises the report in one line per figure, then lists the first
// few violations.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sections %d (confirmed %d, lost %d, unverified %d); overlaps of confirmed holders %d; overlaps inside loss windows %d (longest %v)",
		r.Sections, r.ByOutcome[Confirmed], r.ByOutcome[Lost], r.ByOutcome[Unverified],
		len(r.Violations), len(r.Windows), r.MaxWindow)
	for i, o := range r.Violations {
		if i == 10 {
			fmt.Fprintf(&b, "\n  ... and %d more", len(r.Violations)-i)
			break
		}
		fmt.Fprintf(&b, "\n  violation: %v", o)
	}
	return b.String()
}
