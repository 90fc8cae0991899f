package advisory

// QueueLen returns how many keys l's in-process queue has bookkeeping for.
func QueueLen(l *Locker) int { return l.q.Len() }

// LivePIDs returns how many backends l counts live leases on.
func LivePIDs(l *Locker) int { return l.backends.live() }

// CachedPIDs returns how many connections l knows the backend pid of.
func CachedPIDs(l *Locker) int { return l.backends.cachedConns() }
