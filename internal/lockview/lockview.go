// Package lockview reads who holds and who waits for advisory locks: the
// advisory rows of pg_locks joined with pg_stat_activity, with each key
// decoded back into a keyspace.Key (and its namespace, when one with that id
// is registered in this process).
//
// PostgreSQL does not record when a lock was granted, so a Lock says only
// what is known: for a waiter, how long it has waited (pg_locks.waitstart,
// PostgreSQL 14 and later); for any session, the age of its current
// transaction (xact_start: a transaction-level lock is no older) and of the
// session itself (backend_start: for a pooled connection, much older than
// any lock it holds). Blocking arranges the waiters under the sessions they
// wait behind, from pg_blocking_pids.
package lockview

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Lock is one advisory lock row: a backend holding or waiting for a key.
type Lock struct {
	Key       keyspace.Key
	Namespace string // the registered namespace of a pair key, or ""
	ClassID   uint32
	ObjID     uint32
	ObjSubID  int16
	Mode      string // ExclusiveLock or ShareLock
	Granted   bool
	PID       int
	Database  string

	User            string
	ApplicationName string
	ClientAddr      string // "" for a Unix socket or a background process
	State           string // active, idle, idle in transaction, ...

	Now          time.Time  // the server's clock when read
	BackendStart *time.Time // when the session began
	XactStart    *time.Time // when its current transaction began, if in one
	StateChange  *time.Time
	WaitStart    *time.Time // when a waiter began waiting (PostgreSQL 14+)

	// BlockedBy are the pids pg_blocking_pids names for a waiter: those
	// holding the key in a conflicting mode, and those queued ahead of it
	// for a conflicting mode. Empty for a holder.
	BlockedBy []int
}

// Shared reports whether the lock is in shared mode.
func (l Lock) Shared() bool { return l.Mode == "ShareLock" }

// Waited is how long a waiter has waited; ok is false for a holder, or
// before PostgreSQL 14, which does not record it.
func (l Lock) Waited() (d time.Duration, ok bool) {
	if l.Granted {
		return 0, false
	}
	return l.since(l.WaitStart)
}

// XactAge is how long the session's current transaction has run; ok is
// false outside a transaction. A transaction-level lock is no older; a
// session-level lock can be older or younger.
func (l Lock) XactAge() (d time.Duration, ok bool) { return l.since(l.XactStart) }

// SessionAge is how long the session has existed; ok is false when
// pg_stat_activity does not show it. It bounds the age of any lock the
// session holds, loosely: a pooled connection outlives many locks.
func (l Lock) SessionAge() (d time.Duration, ok bool) { return l.since(l.BackendStart) }

func (l Lock) since(t *time.Time) (time.Duration, bool) {
	if t == nil {
		return 0, false
	}
	return max(l.Now.Sub(*t), 0), true
}

// KeyName is the key as people read it: "ns/b" for a pair key in a registered
// namespace, else Key.String().
func (l Lock) KeyName() string {
	if _, b, ok := l.Key.Pair(); ok && l.Namespace != "" {
		return fmt.Sprintf("%s/%d", l.Namespace, b)
	}
	return l.Key.String()
}

// query reads the advisory rows of the current database, or of every
// database when $1 is true. %s is the waitstart column, or NULL before
// PostgreSQL 14.
const query = `SELECT l.pid, l.classid::int8, l.objid::int8, l.objsubid::int4, l.mode, l.granted,
	coalesce(d.datname, ''), coalesce(a.usename::text, ''), coalesce(a.application_name, ''),
	coalesce(host(a.client_addr), ''), coalesce(a.state, ''),
	now(), a.backend_start, a.xact_start, a.state_change, %s,
	CASE WHEN l.granted THEN '' ELSE array_to_string(pg_blocking_pids(l.pid), ',') END
FROM pg_locks l
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
LEFT JOIN pg_database d ON d.oid = l.database
WHERE l.locktype = 'advisory'
AND ($1::bool OR l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))`

// Querier is what Read needs: *sql.DB, *sql.Conn and *sql.Tx have it.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Read returns the advisory locks of the current database (of every
// database when all is true), holders before waiters for each key, keys in
// keyspace order.
func Read(ctx context.Context, q Querier, all bool) ([]Lock, error) {
	rows, err := q.QueryContext(ctx, fmt.Sprintf(query, "l.waitstart"), all)
	if pgerr.SQLState(err) == "42703" { // undefined column: before PostgreSQL 14
		rows, err = q.QueryContext(ctx, fmt.Sprintf(query, "NULL::timestamptz"), all)
	}
	if err != nil {
		return nil, fmt.Errorf("lockview: reading pg_locks: %w", err)
	}
	defer rows.Close()
	var out []Lock
	for rows.Next() {
		var (
			l              Lock
			c, o           int64
			sub            int32
			bs, xs, sc, ws sql.NullTime
			blockers       string
		)
		if err := rows.Scan(&l.PID, &c, &o, &sub, &l.Mode, &l.Granted, &l.Database, &l.User,
			&l.ApplicationName, &l.ClientAddr, &l.State, &l.Now, &bs, &xs, &sc, &ws, &blockers); err != nil {
			return nil, fmt.Errorf("lockview: reading pg_locks: %w", err)
		}
		if l.BlockedBy, err = pids(blockers); err != nil {
			return nil, fmt.Errorf("lockview: reading pg_blocking_pids: %w", err)
		}
		l.ClassID, l.ObjID, l.ObjSubID = uint32(c), uint32(o), int16(sub)
		k, err := keyspace.FromLock(l.ClassID, l.ObjID, l.ObjSubID)
		if err != nil {
			return nil, fmt.Errorf("lockview: %w", err)
		}
		l.Key = k
		if a, _, ok := k.Pair(); ok {
			if ns, ok := keyspace.LookupNamespace(a); ok {
				l.Namespace = ns.Name()
			}
		}
		l.BackendStart, l.XactStart, l.StateChange, l.WaitStart = ptr(bs), ptr(xs), ptr(sc), ptr(ws)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lockview: reading pg_locks: %w", err)
	}
	slices.SortStableFunc(out, compare)
	return out, nil
}

// pids reads a comma-separated list of pids.
func pids(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("pid %q: %w", f, err)
		}
		out = append(out, n)
	}
	return out, nil
}

func ptr(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	v := t.Time
	return &v
}

// compare orders by database, key, holders first, then waiters by how long
// they have waited (longest first), then pid.
func compare(x, y Lock) int {
	if c := cmp.Compare(x.Database, y.Database); c != 0 {
		return c
	}
	if c := keyspace.Compare(x.Key, y.Key); c != 0 {
		return c
	}
	if x.Granted != y.Granted {
		if x.Granted {
			return -1
		}
		return 1
	}
	xw, _ := x.Waited()
	yw, _ := y.Waited()
	if c := cmp.Compare(yw, xw); c != 0 {
		return c
	}
	return cmp.Compare(x.PID, y.PID)
}
