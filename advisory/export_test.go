package advisory

// QueueLen returns how many keys l's in-process queue has bookkeeping for.
func QueueLen(l *Locker) int { return l.q.Len() }

// LivePIDs returns how many backends l counts live leases on.
func LivePIDs(l *Locker) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pids)
}

// CachedPIDs returns how many connections l knows the backend pid of.
func CachedPIDs(l *Locker) int {
	if l.connPIDs == nil {
		return 0
	}
	l.connPIDs.mu.Lock()
	defer l.connPIDs.mu.Unlock()
	return len(l.connPIDs.m)
}
