package txlock_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// TestStyle: the statement is written in lib/pq's style exactly when txlock
// learns that the driver is lib/pq, and with parameters otherwise. The mock
// matches the text and the arguments exactly.
func TestStyle(t *testing.T) {
	key := keyspace.Pair(5, -6)
	type ender interface {
		txlock.Querier
		Rollback() error
	}
	cases := []struct {
		name  string
		style sqltext.Style
		begin func(db *sql.DB) (ender, []txlock.Option, error)
	}{
		{"*sql.Tx", sqltext.Params, func(db *sql.DB) (ender, []txlock.Option, error) {
			tx, err := db.Begin()
			return tx, nil, err
		}},
		{"WithDriver(pq)", sqltext.Inline, func(db *sql.DB) (ender, []txlock.Option, error) {
			tx, err := db.Begin()
			return tx, []txlock.Option{txlock.WithDriver(&pq.Driver{})}, err
		}},
		{"WithDriver(sqlmock)", sqltext.Params, func(db *sql.DB) (ender, []txlock.Option, error) {
			tx, err := db.Begin()
			return tx, []txlock.Option{txlock.WithDriver(db.Driver())}, err
		}},
		{"*sqlx.Tx postgres", sqltext.Inline, func(db *sql.DB) (ender, []txlock.Option, error) {
			tx, err := sqlx.NewDb(db, "postgres").Beginx()
			return tx, nil, err
		}},
		{"*sqlx.Tx pgx", sqltext.Params, func(db *sql.DB) (ender, []txlock.Option, error) {
			tx, err := sqlx.NewDb(db, "pgx").Beginx()
			return tx, nil, err
		}},
		{"Driver() pq", sqltext.Inline, func(db *sql.DB) (ender, []txlock.Option, error) {
			tx, err := db.Begin()
			return styledTx{tx, &pq.Driver{}}, nil, err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, mock, err := sqlmock.New(sqlmock.QueryMatcherOption(sqlmock.QueryMatcherEqual))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			mock.ExpectBegin()
			q, args := sqltext.XactLockExec(c.style, sqltext.Mode{}, key, time.Second)
			e := mock.ExpectExec(q).WillReturnResult(sqlmock.NewResult(0, 1))
			if len(args) > 0 {
				e.WithArgs(driverValues(args)...)
			} else {
				e.WithoutArgs()
			}
			mock.ExpectRollback()

			tx, opts, err := c.begin(db)
			if err != nil {
				t.Fatal(err)
			}
			opts = append(opts, txlock.WithLockTimeout(time.Second))
			if err := txlock.Lock(context.Background(), tx, key, opts...); err != nil {
				t.Fatal(err)
			}
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
			if err := mock.ExpectationsWereMet(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func driverValues(args []any) []driver.Value {
	out := make([]driver.Value, len(args))
	for i, a := range args {
		out[i] = a
	}
	return out
}
