package mocktest

import (
	"github.com/DATA-DOG/go-sqlmock"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// ExpectXactLockToken expects txlock.LockToken(ctx, db, tx, key, table):
// the transaction lock of key in the transaction (put it between
// ExpectBegin and the transaction's end), granted, then the draw of a
// fencing token from the sequence of table ("" for the default table) in
// the same transaction, answered as by a session that knows the epoch: the
// next token of a fresh table, counted over all keys (Token tells the
// latest of key). Pass WithLockTimeout when the call passes
// txlock.WithLockTimeout.
func (m *Mock) ExpectXactLockToken(key keyspace.Key, table string, opts ...Option) *sqlmock.ExpectedQuery {
	m.expectXact(sqltext.Mode{}, key, xactTimeout(opts), true)
	quoted, _ := sqltext.QuoteFenceTable(table) // txlock refuses a bad name before sending anything
	draw, token := m.nextToken(quoted, []keyspace.Key{key})
	return m.expect(sqltext.FenceDrawTx(quoted), nil).WillReturnRows(sqlmock.NewRows([]string{"draw", "token"}).AddRow(draw, token))
}
