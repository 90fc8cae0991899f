package advisory

import (
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// QueueLen returns how many keys l's in-process queue has bookkeeping for.
func QueueLen(l *Locker) int { return l.q.Len() }

// LivePIDs returns how many backends l counts live leases on.
func LivePIDs(l *Locker) int {
	bs := &l.backends
	bs.mu.Lock()
	defer bs.mu.Unlock()
	n := 0
	for _, b := range bs.byPID {
		if b.sessions.Load() > 0 {
			n++
		}
	}
	return n
}

// LiveLeases returns how many leases are on l's open sessions.
func LiveLeases(l *Locker) int {
	n := 0
	if l.mux != nil {
		l.mux.mu.Lock()
		for _, s := range l.mux.sessions {
			s.mu.Lock()
			n += s.n
			s.mu.Unlock()
		}
		l.mux.mu.Unlock()
	}
	return n
}

// CachedPIDs returns how many connections l knows the backend pid of.
func CachedPIDs(l *Locker) int {
	n := 0
	l.backends.conns.Range(func(any, any) bool { n++; return true })
	return n
}

// SetReleaseTimeout sets how long a release of l's leases may take before it
// is interrupted (releaseTimeout). Call it before l takes a lock.
func SetReleaseTimeout(l *Locker, d time.Duration) { l.relTimeout = d }

// InterruptsBySocket reports whether ls's release is bounded through its
// socket (the keepalive sweep), not through a context given to the driver.
func InterruptsBySocket(ls *Lease) bool { return ls.s.ci.nc != nil }

// SweepPeriod is sweepPeriod, for the bounds of tests.
func SweepPeriod(keepAlive time.Duration) time.Duration { return sweepPeriod(keepAlive) }

// QueueWaiting returns how many goroutines wait in l's in-process queue for
// key.
func QueueWaiting(l *Locker, key keyspace.Key) int { return l.q.Waiting(key) }

// Releasing reports whether a Release of ls has started.
func Releasing(ls *Lease) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.released
}

// SetDeadPeerSQL replaces the statement that sets l's dead-peer bound on a
// connection, so that a test can play a server that refuses or lacks
// settings.
func SetDeadPeerSQL(l *Locker, q string) { l.deadPeerSQL = q }
