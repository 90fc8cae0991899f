package mocktest

import (
	"strconv"

	"github.com/DATA-DOG/go-sqlmock"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// ExpectXactLockToken expects txlock.LockToken(ctx, db, tx, key, table) with
// the mock's db as db: the transaction lock of key in the transaction (put it
// between ExpectBegin and the transaction's end), granted, then the bump of
// key's fencing counter in table ("" for the default table), which txlock
// sends on db outside the transaction; it hands out the next token of key as
// a fresh counter table does (Token tells the latest). Pass WithLockTimeout
// when the call passes txlock.WithLockTimeout.
func (m *Mock) ExpectXactLockToken(key keyspace.Key, table string, opts ...Option) *sqlmock.ExpectedQuery {
	m.expectXact(sqltext.Mode{}, key, xactTimeout(opts), true)
	quoted, _ := sqltext.QuoteFenceTable(table) // txlock refuses a bad name before sending anything
	q, args := sqltext.FenceNext(style, key, quoted)
	token, _ := strconv.ParseInt(m.nextTokens([]keyspace.Key{key})[0], 10, 64)
	return m.expect(q, args).WillReturnRows(sqlmock.NewRows([]string{"token"}).AddRow(token))
}
