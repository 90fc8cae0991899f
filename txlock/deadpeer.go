package txlock

import (
	"context"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
)

// WithDeadPeerTimeout bounds how long the server keeps the transaction, and
// its locks, of a client that vanished without closing its connection (a
// network partition, a frozen host): the server ends such a session within
// about d, and a lock wait whose client is gone ends instead of being
// granted. It sets TCP keepalive, tcp_user_timeout and
// client_connection_check_interval for the transaction only (SET LOCAL: the
// pooled connection gets its own settings back at COMMIT or ROLLBACK), in
// one more statement before the lock; settings an older server lacks are
// skipped. Without it the server's own settings apply, with which
// PostgreSQL keeps a vanished client's locks for about two hours. d below
// 4 s counts as 4 s; d <= 0 sets nothing.
func WithDeadPeerTimeout(d time.Duration) Option { return func(o *options) { o.deadPeer = d } }

// boundDeadPeer applies WithDeadPeerTimeout to tx.
func boundDeadPeer(ctx context.Context, tx Querier, o options) error {
	if o.deadPeer <= 0 {
		return nil
	}
	var n int
	if err := tx.QueryRowContext(ctx, sqltext.DeadPeerFor(o.deadPeer).LocalSQL()).Scan(&n); err != nil {
		return fail(ctx, "dead-peer timeout", err)
	}
	return nil
}
