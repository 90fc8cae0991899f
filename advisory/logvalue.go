package advisory

import (
	"log/slog"
	"strconv"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// keyName is key as people read it: "namespace/n" for a pair key of a
// namespace registered in this process (as pglock ls shows it), else the
// key's String.
func keyName(key keyspace.Key) string {
	if ns, ok := namespaceOf(key); ok {
		_, b, _ := key.Pair()
		return ns.Name() + "/" + strconv.FormatInt(int64(b), 10)
	}
	return key.String()
}

// keysValue is keys for a log record: the name of the only key, or a list
// of at most maxKeysShown names and the count.
func keysValue(keys []keyspace.Key) slog.Value {
	if len(keys) == 1 {
		return slog.StringValue(keyName(keys[0]))
	}
	names := make([]string, 0, min(len(keys), maxKeysShown))
	for _, k := range keys[:min(len(keys), maxKeysShown)] {
		names = append(names, keyName(k))
	}
	if len(keys) > maxKeysShown {
		names = append(names, "… "+strconv.Itoa(len(keys))+" keys")
	}
	return slog.AnyValue(names)
}

// LogValue makes a Lease log as a group: its key by name ("orders/42" for a
// pair key of a registered namespace), the number of keys of a LockAll
// lease, its mode, the backend pid, how long it has been held, its state
// (held, released or lost) and its fencing token if it has one. It
// implements slog.LogValuer, so slog.Any("lease", lease) shows this.
func (ls *Lease) LogValue() slog.Value {
	if ls == nil {
		return slog.StringValue("<nil>")
	}
	mode := "exclusive"
	if ls.shared {
		mode = "shared"
	}
	state := "held"
	if err := ls.Err(); err != nil {
		state = "released"
		if ls.lossErr() != nil {
			state = "lost"
		}
	}
	attrs := make([]slog.Attr, 0, 7)
	attrs = append(attrs, slog.Any("key", keysValue(ls.keys)))
	if len(ls.keys) > 1 {
		attrs = append(attrs, slog.Int("keys", len(ls.keys)))
	}
	attrs = append(attrs, slog.String("mode", mode), slog.Int("pid", ls.PID()), slog.String("state", state))
	if state == "held" {
		attrs = append(attrs, slog.Duration("held", ls.held()))
	}
	if tok := ls.Token(); tok != 0 {
		attrs = append(attrs, slog.Int64("token", tok))
	}
	return slog.GroupValue(attrs...)
}

// LogValue makes a Locker log as a group of its Stats: the leases held,
// the goroutines waiting in the process's queue and on the server, and the
// sessions open by kind. It implements slog.LogValuer.
func (l *Locker) LogValue() slog.Value {
	if l == nil {
		return slog.StringValue("<nil>")
	}
	st := l.Stats()
	return slog.GroupValue(
		slog.Int("held", st.Held),
		slog.Int("queued", st.Queued),
		slog.Int("waiting_on_server", st.WaitingOnServer),
		slog.Int("multiplexed_sessions", st.Multiplexed),
		slog.Int("dedicated_sessions", st.Dedicated),
	)
}
