package advisory

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// muxSet is the multiplexed sessions of a Locker, and the slots of the
// dedicated sessions it opens beside them: one for each acquire that waits
// on the server for a key held elsewhere (or a LockAll), kept until that
// lease ends. Both are bounded, so a multiplexed Locker never holds more
// than sessions + waiting connections of the pool.
type muxSet struct {
	l        *Locker
	sizeOnce sync.Once
	max      int           // sessions
	slots    chan struct{} // one token per dedicated session

	mu       sync.Mutex
	sessions []*session
	opening  int
	changed  chan struct{} // closed (and replaced) when a session is added or removed

	active atomic.Int32 // operations being submitted, on every session
}

// DefaultSessions and DefaultWaiting are the bounds of a multiplexed Locker
// over a pool without a limit (SetMaxOpenConns(0)); over a bounded pool of
// n connections each is n/4, at least 1 and at most the default.
const (
	DefaultSessions = 4
	DefaultWaiting  = 16
)

// size fixes the bounds at first use, from the options or the pool's limit
// as it is then.
func (m *muxSet) size() {
	m.sizeOnce.Do(func() {
		n := m.l.db.Stats().MaxOpenConnections
		share := func(def int) int {
			if n <= 0 {
				return def
			}
			return min(max(n/4, 1), def)
		}
		m.max = m.l.opts.sessions
		if m.max == 0 {
			m.max = share(DefaultSessions)
		}
		w := m.l.opts.waiting
		if w == 0 {
			w = share(DefaultWaiting)
		}
		m.slots = make(chan struct{}, w)
		m.changed = make(chan struct{})
	})
}

// takeSlot waits for a slot of a dedicated session, bounded by ctx.
func (m *muxSet) takeSlot(ctx context.Context) error {
	m.size()
	select {
	case m.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case m.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waited for one of the %d connections that wait for keys held elsewhere: %w", cap(m.slots), ctx.Err())
	}
}

// giveSlot gives a slot back.
func (m *muxSet) giveSlot() { <-m.slots }

// pick returns a session for the next operation: an idle one if there is
// one, else a new one while fewer than the bound are open, else the one
// with the fewest operations waiting.
func (m *muxSet) pick(ctx context.Context) (*session, error) {
	m.size()
	for {
		m.mu.Lock()
		var best *session
		bestLoad := math.MaxInt
		for _, s := range m.sessions {
			if load := s.load(); load < bestLoad {
				best, bestLoad = s, load
				if load == 0 {
					break
				}
			}
		}
		if bestLoad > 0 && len(m.sessions)+m.opening < m.max {
			m.opening++
			m.mu.Unlock()
			s, err := m.open(ctx)
			m.mu.Lock()
			m.opening--
			if err == nil {
				m.sessions = append(m.sessions, s)
				m.signalLocked()
			}
			m.mu.Unlock()
			if err != nil && best != nil && ctx.Err() == nil {
				return best, nil
			}
			return s, err
		}
		if best != nil {
			m.mu.Unlock()
			return best, nil
		}
		// Every session that may be open is being opened: wait for one.
		changed := m.changed
		m.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// signalLocked wakes the goroutines waiting for a session; m.mu is held.
func (m *muxSet) signalLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// load is how busy the session is for a newcomer: 0 when an operation would
// be sent at once, math.MaxInt when the session has ended (it is about to
// leave the set): pick never gives out an ended session, on which an
// operation would fail at once, and a try that made again and again on one
// such session would use up its budget of retries (after a server restart,
// before the dead session left the set) without meeting another.
func (s *session) load() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return math.MaxInt
	}
	n := len(s.pending)
	if s.sending || len(s.tok) > 0 {
		n++
	}
	return n
}

// open pins a connection for a new multiplexed session.
func (m *muxSet) open(ctx context.Context) (*session, error) {
	s, err := m.l.openSession(ctx, true)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.lastOK, s.idle = mono(), mono()
	s.mu.Unlock()
	// No lease yet: back to the pool if none comes within idleAfter.
	m.l.ka.watch(s, mono(), m.l.idleAfter)
	return s, nil
}

// remove takes an ended session out of the set.
func (m *muxSet) remove(s *session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if i := slices.Index(m.sessions, s); i >= 0 {
		m.sessions = slices.Delete(m.sessions, i, i+1)
		m.signalLocked()
	}
}

// closeIdle gives the connection of a session without leases back to the
// pool; false if the session is busy after all.
func (m *muxSet) closeIdle(s *session) bool {
	if !s.tryTake() {
		return false
	}
	if !s.close(false) {
		s.give()
		return false
	}
	m.remove(s)
	return true
}

// errBusy is the answer of a try that found the key held elsewhere.
var errBusy = errors.New("busy")

// tryLock tries key on a multiplexed session: one operation of the next
// batch. It returns errBusy if another session holds the key. A session
// that ends before it answers changed nothing, and the try is made again on
// another (a few times: after a server restart every connection of the
// pool may be dead).
func (m *muxSet) tryLock(ctx context.Context, key keyspace.Key, shared bool) (*Lease, error) {
	kind := sqltext.OpTryLock
	if shared {
		kind = sqltext.OpTryLockShared
	}
	budget := 0
	for attempt := 0; ; attempt++ {
		s, err := m.pick(ctx)
		if err != nil {
			return nil, err
		}
		o := &op{kind: kind, key: key}
		s.mu.Lock()
		s.tries++ // the session must not go back to the pool under a grant
		s.mu.Unlock()
		ls, err := m.tryOn(ctx, s, o, shared)
		s.mu.Lock()
		s.tries--
		s.mu.Unlock()
		if ls != nil || errors.Is(err, errBusy) || (err != nil && ctx.Err() != nil) {
			return ls, err
		}
		if err != nil && !errors.Is(err, errClosed) && exhausted(&budget, attempt, m.retries) {
			return nil, err
		}
	}
}

// tryOn sends the try o on s: the lease, errBusy, or an error (nil lease
// and nil error: the session ended right after the grant, try again).
func (m *muxSet) tryOn(ctx context.Context, s *session, o *op, shared bool) (*Lease, error) {
	err := s.submit(ctx, o)
	switch {
	case err == nil && !o.ok:
		return nil, errBusy
	case err == nil && ctx.Err() != nil:
		// Granted as ctx ended: give it back before saying so.
		m.untry(s, o.key, shared)
		return nil, ctx.Err()
	case err == nil:
		var tokens []int64
		if m.l.opts.fencing {
			tokens = []int64{o.token}
		}
		ls := newLease(m.l, s, []keyspace.Key{o.key}, shared, tokens)
		if s.attach(ls) {
			return ls, nil
		}
		// The session ended right after the grant (a loss, never a
		// return to the pool: tries keeps it open): the lock went with it.
		return nil, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	}
	return nil, err
}

// retries bounds how many times an operation is tried again after its
// session ended without answering.
func (m *muxSet) retries() int { return m.l.db.Stats().OpenConnections + m.max }

// untry gives back a key that a try took for a caller who is gone.
func (m *muxSet) untry(s *session, key keyspace.Key, shared bool) {
	kind := sqltext.OpUnlock
	if shared {
		kind = sqltext.OpUnlockShared
	}
	_ = s.submit(context.Background(), &op{kind: kind, key: key})
}
