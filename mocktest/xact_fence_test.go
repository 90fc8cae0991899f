package mocktest_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/pgadvisory/pgadvisory/mocktest"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// TestXactLockToken drives txlock.LockToken against ExpectXactLockToken:
// tokens count over all keys as a fresh fencing table does.
func TestXactLockToken(t *testing.T) {
	ctx := context.Background()
	db, m := mocktest.New(t)
	const e = 1 << 40 // epoch 1: a fresh table in the server's first lifetime
	for i, want := range []int64{e + 1, e + 2} {
		end := "commit"
		if i == 0 {
			end = "rollback"
		}
		err := inTx(t, db, m, end, func() { m.ExpectXactLockToken(keyA, "") }, func(tx *sql.Tx) error {
			got, err := txlock.LockToken(ctx, db, tx, keyA, "")
			if err == nil && got != want {
				t.Errorf("token %d, want %d", got, want)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	err := inTx(t, db, m, "commit", func() { m.ExpectXactLockToken(keyB, "public.fence") }, func(tx *sql.Tx) error {
		got, err := txlock.LockToken(ctx, db, tx, keyB, "public.fence")
		if err == nil && got != e+1 {
			t.Errorf("first token of another table %d, want e+1", got)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if m.Token(keyA) != e+2 || m.Token(keyB) != e+1 {
		t.Errorf("Token = %d, %d; want e+2, e+1", m.Token(keyA), m.Token(keyB))
	}
	if err := m.ExpectationsWereMet(); err != nil {
		t.Error(err)
	}
}
