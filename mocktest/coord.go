package mocktest

import (
	"context"
	"database/sql/driver"
	"slices"
	"time"

	"github.com/DATA-DOG/go-sqlmock"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Expectations for advisory's coordination types, Semaphore and Elector.

// ExpectSemaphoreTryAcquire expects a TryAcquire (or an Acquire that finds
// a slot free) of the semaphore name in ns with n slots: the tries of slots
// 0, 1, ... in order, refused up to slot and granted for slot, as a server
// where the slots before it are held elsewhere answers. A slot outside 0 to
// n-1 refuses every try (TryAcquire returns advisory.ErrNotAcquired).
// heldHere lists the slots that leases of the same Locker hold: their
// tries are refused in memory and send nothing.
func (m *Mock) ExpectSemaphoreTryAcquire(ns keyspace.Namespace, name string, n, slot int, heldHere ...int) {
	for i, k := range advisory.SemaphoreSlots(ns, name, n) {
		if slices.Contains(heldHere, i) {
			continue
		}
		m.ExpectTryLock(k, i == slot)
		if i == slot {
			return
		}
	}
}

// ExpectSemaphoreRelease expects the release of slot of the semaphore
// name in ns with n slots, to the server (a release that hands the slot to
// a waiting goroutine of the process sends nothing).
func (m *Mock) ExpectSemaphoreRelease(ns keyspace.Namespace, name string, n, slot int) *sqlmock.ExpectedExec {
	return m.ExpectUnlock(advisory.SemaphoreSlots(ns, name, n)[slot], true)
}

// Elector returns advisory.NewElector over the mocked database with the
// settings that match the mock first (opts given here override them): the
// mock's fencing table and a keepalive of an hour. The mock must be made
// with WithFencing: an Elector's terms are fencing tokens.
func (m *Mock) Elector(key keyspace.Key, onElected func(ctx context.Context, term int64) error, opts ...advisory.ElectorOption) (*advisory.Elector, error) {
	all := []advisory.ElectorOption{
		advisory.ElectFenceTable(m.fenceName),
		advisory.ElectLocker(advisory.WithKeepAlive(time.Hour)),
	}
	return advisory.NewElector(m.db, key, onElected, append(all, opts...)...)
}

// ExpectElected expects an Elector's campaign for key that wins at once
// (on a mock made WithFencing): the fenced lock, granted with the key's
// next token, then the transaction on the leader's session that writes its
// application_name (from identity, as ElectAs sets it) and TCP settings
// (for deadPeer, as ElectDeadPeer sets it; 0 for the default, 5 s). It
// returns the term OnElected gets.
func (m *Mock) ExpectElected(key keyspace.Key, identity string, deadPeer time.Duration) int64 {
	if deadPeer == 0 {
		deadPeer = 5 * time.Second
	}
	m.ExpectLock(key)
	term := m.Token(key)
	m.ExpectBegin()
	cols := make([]string, 0, 2*len(sqltext.ElectSettings))
	row := make([]driver.Value, 0, cap(cols))
	for _, s := range sqltext.ElectSettings {
		cols = append(cols, "current_"+s)
		row = append(row, defaultSetting(s))
	}
	args := sqltext.ElectArgs(term, identity, deadPeer)
	for i, s := range sqltext.ElectSettings {
		cols = append(cols, "set_"+s)
		row = append(row, args[i])
	}
	m.expect(sqltext.ElectIdentify, args).WillReturnRows(sqlmock.NewRows(cols).AddRow(row...))
	m.ExpectCommit()
	return term
}

// ExpectTermEnd expects the end of a term on key whose lock is still held
// (OnElected returned, Resign, or Run's context ended): the transaction
// that puts the session's settings back, then the unlock.
func (m *Mock) ExpectTermEnd(key keyspace.Key) {
	m.ExpectBegin()
	args := make([]any, 0, len(sqltext.ElectSettings))
	for _, s := range sqltext.ElectSettings {
		args = append(args, defaultSetting(s))
	}
	m.expectExec(sqltext.ElectRestore, args).WillReturnResult(sqlmock.NewResult(0, 1))
	m.ExpectCommit()
	m.ExpectUnlock(key, true)
}

// defaultSetting is what a fresh session answers for an ElectSettings
// setting: no application_name, the TCP settings at the system's defaults.
func defaultSetting(name string) string {
	if name == "application_name" {
		return ""
	}
	return "0"
}
