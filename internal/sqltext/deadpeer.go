package sqltext

import (
	"strconv"
	"strings"
	"time"
)

// DeadPeer is how long the server keeps the session of a client that
// vanished (a partition, a frozen host) before it ends the session and its
// locks, and the session settings that say so. All of them are settable by
// any user, per session (PostgreSQL 12 for the TCP ones, 14 for
// client_connection_check_interval).
type DeadPeer struct {
	// Bound is the target: the server ends a silent client's session within
	// about Bound.
	Bound time.Duration
	// KeepalivesIdle, KeepalivesInterval and KeepalivesCount are the TCP
	// keepalive settings, in whole seconds: a silent peer is declared dead
	// after Idle + Count*Interval <= Bound.
	KeepalivesIdle, KeepalivesInterval, KeepalivesCount int
	// UserTimeoutMS bounds how long data sent may stay unacknowledged
	// (tcp_user_timeout), so a partition that hits while the server has an
	// answer in flight is bounded too.
	UserTimeoutMS int
	// CheckIntervalMS makes a backend that runs a statement (a waiting lock)
	// look at its socket this often (client_connection_check_interval), so a
	// waiter whose client is gone stops waiting instead of being granted the
	// lock.
	CheckIntervalMS int
}

// DeadPeerFor returns the settings that bound a vanished client's session to
// about bound: keepalive probes start after at most half of it, three probes
// a sixth of it apart follow, unacknowledged data is given as long as the
// probes, and a running statement checks its client every tenth of it (1 s
// to 10 s). TCP counts keepalives in whole seconds: bounds below 4 s count as
// 4 s.
func DeadPeerFor(bound time.Duration) DeadPeer {
	bound = max(bound, 4*time.Second)
	secs := int(bound / time.Second)
	interval := max(secs/6, 1)
	idle := max(min(secs/2, secs-3*interval), 1)
	return DeadPeer{
		Bound:              bound,
		KeepalivesIdle:     idle,
		KeepalivesInterval: interval,
		KeepalivesCount:    3,
		// Linux ends a connection whose keepalives go unanswered once
		// tcp_user_timeout has passed, if it is set: the same bound.
		UserTimeoutMS:   (idle + 3*interval) * 1000,
		CheckIntervalMS: int(min(max(bound/10, time.Second), 10*time.Second) / time.Millisecond),
	}
}

// Settings lists the settings as name and value, in the order they are set.
func (d DeadPeer) Settings() [][2]string {
	return [][2]string{
		{"tcp_keepalives_idle", strconv.Itoa(d.KeepalivesIdle)},
		{"tcp_keepalives_interval", strconv.Itoa(d.KeepalivesInterval)},
		{"tcp_keepalives_count", strconv.Itoa(d.KeepalivesCount)},
		{"tcp_user_timeout", strconv.Itoa(d.UserTimeoutMS)},
		{"client_connection_check_interval", strconv.Itoa(d.CheckIntervalMS)},
	}
}

// SQL is one statement that applies the settings to the session for its
// lifetime and answers the backend's pid and the names of the settings the
// server does not have (an older server), comma-separated. Those are
// skipped, not an error; a setting the server refuses fails the statement.
// The values are integers formatted here, never user text.
func (d DeadPeer) SQL() string {
	var b strings.Builder
	b.WriteString("SELECT pg_backend_pid(), coalesce(string_agg(CASE WHEN s.name IS NULL THEN v.name END, ','), '')" +
		" FROM (VALUES ")
	writeSettings(&b, d.Settings())
	b.WriteString(") AS v(name, value) LEFT JOIN pg_settings s ON s.name = v.name" +
		" WHERE CASE WHEN s.name IS NULL THEN true ELSE set_config(v.name, v.value, false) IS NOT NULL END")
	return b.String()
}

// LocalSQL is one statement that applies the settings to the current
// transaction only (they revert at its end) and answers how many of them
// the server has; settings it does not have are skipped.
func (d DeadPeer) LocalSQL() string {
	var b strings.Builder
	b.WriteString("SELECT count(*) FROM (VALUES ")
	writeSettings(&b, d.Settings())
	// The CASE reads s.name, so the set_config cannot be evaluated below
	// the join, for a name the server does not have.
	b.WriteString(") AS v(name, value) LEFT JOIN pg_settings s ON s.name = v.name" +
		" WHERE CASE WHEN s.name IS NULL THEN false ELSE set_config(v.name, v.value, true) IS NOT NULL END")
	return b.String()
}

// writeSettings writes settings as rows of a VALUES list.
func writeSettings(b *strings.Builder, settings [][2]string) {
	for i, kv := range settings {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("('")
		b.WriteString(kv[0])
		b.WriteString("', '")
		b.WriteString(kv[1])
		b.WriteString("')")
	}
}
