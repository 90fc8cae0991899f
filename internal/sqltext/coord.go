package sqltext

import (
	"strconv"
	"strings"
	"time"
)

// The statements of advisory's leader election (Elector, CurrentLeader),
// here so that mocktest expects the same text.

// ElectSettings are the session settings an elected leader sets on the
// session that holds its lock, in the order of the arguments of
// ElectIdentify and ElectRestore: its application_name (who leads, for
// CurrentLeader and pg_stat_activity), and the TCP settings that make the
// server end the session of a leader cut off by a partition within seconds
// instead of hours.
var ElectSettings = [...]string{
	"application_name", "tcp_keepalives_idle", "tcp_keepalives_interval",
	"tcp_keepalives_count", "tcp_user_timeout",
}

// ElectIdentify sets ElectSettings to $1..$5 for the session (set_config
// with is_local false, which outlives the transaction it runs in) and
// answers with the values they had before, in one row.
const ElectIdentify = "SELECT current_setting('application_name'), current_setting('tcp_keepalives_idle'), " +
	"current_setting('tcp_keepalives_interval'), current_setting('tcp_keepalives_count'), " +
	"current_setting('tcp_user_timeout'), " +
	"set_config('application_name', $1, false), set_config('tcp_keepalives_idle', $2, false), " +
	"set_config('tcp_keepalives_interval', $3, false), set_config('tcp_keepalives_count', $4, false), " +
	"set_config('tcp_user_timeout', $5, false)"

// ElectRestore sets ElectSettings back to $1..$5 (the values ElectIdentify
// answered) before the session goes back to the pool.
const ElectRestore = "SELECT set_config('application_name', $1, false), set_config('tcp_keepalives_idle', $2, false), " +
	"set_config('tcp_keepalives_interval', $3, false), set_config('tcp_keepalives_count', $4, false), " +
	"set_config('tcp_user_timeout', $5, false)"

// LockHolders answers with the pid and application_name of every session of
// the current database that holds the advisory lock ($1 classid, $2 objid,
// $3 objsubid, as keyspace.Key.Lock gives them) granted.
const LockHolders = "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid " +
	"WHERE l.locktype = 'advisory' AND l.granted " +
	"AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) " +
	"AND l.classid::int8 = $1 AND l.objid::int8 = $2 AND l.objsubid = $3 ORDER BY a.pid"

// ElectAppPrefix starts the application_name of an elected leader's
// session: ElectAppPrefix, the term, ":", the identity.
const ElectAppPrefix = "pgadvisory:"

// ElectAppName is the application_name of the leader of term n: at most 63
// bytes (what the server keeps), printable ASCII (others become '?').
func ElectAppName(n int64, identity string) string {
	var b strings.Builder
	b.WriteString(ElectAppPrefix)
	b.WriteString(strconv.FormatInt(n, 10))
	b.WriteByte(':')
	for i := 0; i < len(identity) && b.Len() < 63; i++ {
		c := identity[i]
		if c < 32 || c > 126 {
			c = '?'
		}
		b.WriteByte(c)
	}
	return b.String()
}

// ElectArgs are the arguments of ElectIdentify for the leader of term n:
// TCP keepalives after deadPeer/4 idle (1 s at least), one probe a second,
// 3 probes, and tcp_user_timeout deadPeer.
func ElectArgs(n int64, identity string, deadPeer time.Duration) []any {
	idle := max(deadPeer/4, time.Second)
	return []any{
		ElectAppName(n, identity),
		strconv.FormatInt(int64(idle/time.Second), 10), "1", "3",
		strconv.FormatInt(deadPeer.Milliseconds(), 10),
	}
}
