package benchsuite

import (
	"context"
	"database/sql"
	"strconv"
	"testing"

	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// BenchmarkXactLock: BEGIN, a transaction lock of a random key, COMMIT, 8
// connections. form=library passes the plain *sql.Tx (txlock cannot see the
// driver and sends a parameter); form=library-driver adds
// txlock.WithDriver(db.Driver()), which picks the driver's best style.
func BenchmarkXactLock(b *testing.B) {
	eachDriver(b, func(b *testing.B, db *sql.DB) {
		inTx := func(body func(ctx context.Context, tx *sql.Tx, k keyspace.Key, n int64) error) op {
			return func(ctx context.Context, _ *sql.Conn, r rng) error {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					return err
				}
				k, n := r.key()
				if err := body(ctx, tx, k, n); err != nil {
					_ = tx.Rollback()
					return err
				}
				return tx.Commit()
			}
		}
		drv := txlock.WithDriver(db.Driver())
		forms := []form{
			{name: "library", op: inTx(func(ctx context.Context, tx *sql.Tx, k keyspace.Key, _ int64) error {
				return txlock.Lock(ctx, tx, k)
			})},
			{name: "library-driver", op: inTx(func(ctx context.Context, tx *sql.Tx, k keyspace.Key, _ int64) error {
				return txlock.Lock(ctx, tx, k, drv)
			})},
			{name: "raw-params", op: inTx(func(ctx context.Context, tx *sql.Tx, _ keyspace.Key, n int64) error {
				_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", n)
				return err
			})},
			{name: "raw-inline", op: inTx(func(ctx context.Context, tx *sql.Tx, _ keyspace.Key, n int64) error {
				_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock("+strconv.FormatInt(n, 10)+")")
				return err
			})},
		}
		runForms(b, db, 8, forms)
	})
}
