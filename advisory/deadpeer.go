package advisory

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
)

// MinDeadPeerTimeout is the default dead-peer timeout's floor: the default
// is ten keepalive intervals (WithKeepAlive), and at least this.
const MinDeadPeerTimeout = 5 * time.Second

// WithDeadPeerTimeout bounds how long the server keeps the session, and the
// locks, of a client that vanished without closing its connection (a
// network partition, a frozen or powered-off host): the server ends such a
// session within about d. By default d is ten keepalive intervals, at least
// MinDeadPeerTimeout (10 s with the default keepalive), well after the
// holder itself learns of the loss (within a keepalive interval and a
// second). d <= 0 leaves the server's own settings, with which PostgreSQL
// keeps a vanished client's locks for about two hours.
//
// The bound is set once per connection, as session settings that any user
// may change (tcp_keepalives_idle, tcp_keepalives_interval,
// tcp_keepalives_count, tcp_user_timeout and client_connection_check_interval,
// the last of which also stops a waiter whose client is gone from being
// granted the lock). It only applies over TCP and only with lib/pq and pgx,
// whose connections keep one server session. A server that refuses the
// settings gets one warning logged per Locker (to the WithLogger logger, else
// slog's default) and the acquires go on without them.
func WithDeadPeerTimeout(d time.Duration) Option {
	return func(o *options) {
		o.deadPeer = d
		o.deadPeerSet = true
	}
}

// deadPeerBound returns the dead-peer timeout the options ask for, 0 for
// none.
func (o *options) deadPeerBound() time.Duration {
	if o.deadPeerSet {
		return max(o.deadPeer, 0)
	}
	return max(10*o.keepAlive, MinDeadPeerTimeout)
}

// tune applies the Locker's dead-peer settings to the session's connection
// unless it has them already, and reports whether it ran, in which case the
// session's backend is learnt too. An error is the connection's (or the
// context's); a server that refuses the settings is warned about once and
// not asked again.
func (s *session) tune(ctx context.Context) (bool, error) {
	l := s.l
	if l.deadPeerSQL == "" || l.deadPeerOff.Load() || s.dc == nil || (s.ci != nil && s.ci.tuned.Load()) {
		return false, nil
	}
	var pid int
	var missing string
	if err := s.conn.QueryRowContext(ctx, l.deadPeerSQL).Scan(&pid, &missing); err != nil {
		if ctx.Err() != nil || connBroken(err) || pgerr.SQLState(err) == "" {
			return false, err
		}
		l.deadPeerOff.Store(true)
		l.warnDeadPeer("the server refused the settings; a client that vanishes keeps its locks as long as the server's TCP settings say",
			slog.String("error", err.Error()))
		return false, nil
	}
	if missing != "" {
		l.warnDeadPeer("the server has no such settings (PostgreSQL 14 or newer has all); the others are set",
			slog.String("missing", strings.ReplaceAll(missing, ",", ", ")))
	}
	s.ci = l.backends.learn(s.dc, pid)
	s.ci.tuned.Store(true)
	return true, nil
}

// warnDeadPeer logs, once per Locker, why its dead-peer bound does not
// fully hold.
func (l *Locker) warnDeadPeer(msg string, attrs ...slog.Attr) {
	l.deadPeerWarn.Do(func() {
		lg := l.opts.logger
		if lg == nil {
			lg = slog.Default()
		}
		attrs = append(attrs, slog.Duration("dead_peer_timeout", l.opts.deadPeerBound()))
		lg.LogAttrs(context.Background(), slog.LevelWarn, "advisory: dead-peer timeout: "+msg, attrs...)
	})
}

// deadPeerStatement returns the statement that sets the options' dead-peer
// bound on a session, "" for none.
func deadPeerStatement(o *options) string {
	d := o.deadPeerBound()
	if d <= 0 {
		return ""
	}
	return sqltext.DeadPeerFor(d).SQL()
}
