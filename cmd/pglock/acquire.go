package main

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// newAcquirer takes session locks through package advisory, with a lease
// that checks its connection every keepalive, and with fencing tokens from
// the fencing table fence (see advisory.WithFencing) when fence is not nil.
func newAcquirer(db *sql.DB, keepalive time.Duration, fence *string) acquireFunc {
	opts := []advisory.Option{advisory.WithKeepAlive(keepalive)}
	if fence != nil {
		opts = append(opts, advisory.WithFencing(*fence))
	}
	l := advisory.New(db, opts...)
	return func(ctx context.Context, key keyspace.Key, shared, try bool) (held, error) {
		var (
			lease *advisory.Lease
			err   error
		)
		switch {
		case shared && try:
			lease, err = l.TryLockShared(ctx, key)
		case shared:
			lease, err = l.LockShared(ctx, key)
		case try:
			lease, err = l.TryLock(ctx, key)
		default:
			lease, err = l.Lock(ctx, key)
		}
		if errors.Is(err, advisory.ErrNotAcquired) {
			return nil, errors.Join(errNotAcquired, err)
		}
		if err != nil {
			return nil, err
		}
		return lease, nil
	}
}
