package txlock_test

import (
	"database/sql"
	"errors"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// TestLockToken: tokens of transaction locks strictly increase per key and
// never repeat, across commits, rollbacks and a terminated holder, in every
// transaction form, interleaved with advisory's session tokens on the same
// key and table.
func TestLockToken(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		db := itest.Open(t, driverName)
		ctx := ctxT(t)
		key := keyspace.Hash("txlock:fence:" + t.Name())
		for _, c := range []struct {
			db    *sql.DB
			table string
			want  error
		}{{db, "", txlock.ErrNoFenceTable}, {db, `x"; DROP TABLE y`, txlock.ErrBadFenceTable}, {nil, "", txlock.ErrNilDB}} {
			tx := mustBegin(t, db)
			_, err := txlock.LockToken(ctx, c.db, tx, key, c.table)
			if !errors.Is(err, c.want) {
				t.Fatalf("LockToken(table %q) = %v, want %v", c.table, err, c.want)
			}
			// The fencing errors are advisory's too: one check serves both.
			if c.want != txlock.ErrNilDB && !errors.Is(err, map[error]error{
				txlock.ErrNoFenceTable: advisory.ErrNoFenceTable, txlock.ErrBadFenceTable: advisory.ErrBadFenceTable,
			}[c.want]) {
				t.Fatalf("LockToken(table %q) = %v, which advisory's fencing error does not match", c.table, err)
			}
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := txlock.LockToken(ctx, db, db, key, ""); !errors.Is(err, txlock.ErrNotTransaction) {
			t.Fatalf("db as the transaction = %v, want ErrNotTransaction", err)
		}
		if err := advisory.CreateFenceTable(ctx, db, ""); err != nil {
			t.Fatal(err)
		}
		var last int64
		check := func(what string, tok int64) {
			t.Helper()
			if last == 0 && tok == firstToken(t, db) {
				last = tok - 1 // a key's first token in the epoch
			}
			if tok != last+1 {
				t.Fatalf("%s: token %d after %d, want %d", what, tok, last, last+1)
			}
			last = tok
		}
		session := advisory.New(db, advisory.WithFencing(""))
		for _, kind := range txKinds {
			for _, end := range []string{"commit", "rollback", "terminate"} {
				tx, err := kind.begin(ctx, db, driverName)
				if err != nil {
					t.Fatal(err)
				}
				tok, err := txlock.LockToken(ctx, db, tx, key, "")
				if err != nil {
					t.Fatal(err)
				}
				check(kind.name+"/"+end, tok)
				if free(t, db, key, false) {
					t.Fatalf("%v free while LockToken's transaction holds it", key)
				}
				// A try while it is held takes no token.
				other := mustBegin(t, db)
				if _, err := txlock.LockToken(ctx, db, other, key, "", txlock.WithTry()); !errors.Is(err, txlock.ErrNotAcquired) {
					t.Fatalf("LockToken WithTry on a held key = %v", err)
				}
				if err := other.Rollback(); err != nil {
					t.Fatal(err)
				}
				switch end {
				case "commit":
					err = tx.Commit()
				case "rollback":
					err = tx.Rollback()
				case "terminate":
					var pid int
					if err := tx.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
						t.Fatal(err)
					}
					if _, err := db.ExecContext(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
						t.Fatal(err)
					}
					_ = tx.Rollback() // fails: the backend is gone
					err = nil
				}
				if err != nil {
					t.Fatal(err)
				}
				// An advisory session holder of the same key comes next.
				lease, err := session.Lock(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				check("advisory after "+kind.name+"/"+end, lease.Token())
				if err := lease.Release(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Do users: NextToken while Do holds the key.
		err := txlock.Do(ctx, db, key, func(*sql.Tx) error {
			tok, err := txlock.NextToken(ctx, db, key, "")
			if err != nil {
				return err
			}
			check("NextToken in Do", tok)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Other keys draw from the same sequence: the next tokens; a pair
		// key too.
		for _, k := range []keyspace.Key{keyspace.Int64(77), keyspace.Pair(1, 2)} {
			tx := mustBegin(t, db)
			tok, err := txlock.LockToken(ctx, db, tx, k, "", txlock.WithShared())
			if err != nil {
				t.Fatal(err)
			}
			check("another key "+k.String(), tok)
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("tokens up to %d over commits, rollbacks, terminated holders and advisory leases, without a gap or a repeat", last)
		clean(t, db)
	})
}

// TestLockTokenConcurrent: 8 goroutines take one key over and over, with
// transaction locks that commit or roll back and with advisory session
// leases; the tokens, in the order the holders got the key, strictly
// increase and never repeat.
func TestLockTokenConcurrent(t *testing.T) {
	const workers = 8
	per := 125
	if testing.Short() {
		per = 20
	}
	itest.EachDriver(t, func(t *testing.T, driverName string) {
		db := itest.Open(t, driverName)
		db.SetMaxIdleConns(2 * workers)
		ctx := ctxT(t)
		if err := advisory.CreateFenceTable(ctx, db, ""); err != nil {
			t.Fatal(err)
		}
		key := keyspace.Hash("txlock:fence:" + t.Name())
		session := advisory.New(db, advisory.WithFencing(""))
		var seq []int64 // appended while holding key
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range per {
					if (w+i)%4 == 3 {
						lease, err := session.Lock(ctx, key)
						if err != nil {
							t.Errorf("advisory Lock: %v", err)
							return
						}
						seq = append(seq, lease.Token())
						if err := lease.Release(ctx); err != nil {
							t.Errorf("Release: %v", err)
							return
						}
						continue
					}
					var tx txlock.Querier
					var end func() error
					if w%2 == 0 {
						x, err := sqlx.NewDb(db, driverName).BeginTxx(ctx, nil)
						if err != nil {
							t.Errorf("begin: %v", err)
							return
						}
						tx, end = x, x.Commit
						if i%2 == 0 {
							end = x.Rollback
						}
					} else {
						x, err := db.BeginTx(ctx, nil)
						if err != nil {
							t.Errorf("begin: %v", err)
							return
						}
						tx, end = x, x.Commit
						if i%2 == 1 {
							end = x.Rollback
						}
					}
					tok, err := txlock.LockToken(ctx, db, tx, key, "")
					if err != nil {
						t.Errorf("LockToken: %v", err)
						_ = end()
						return
					}
					seq = append(seq, tok)
					if err := end(); err != nil {
						t.Errorf("end: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		for i := 1; i < len(seq); i++ {
			if seq[i] <= seq[i-1] {
				t.Fatalf("token %d after %d", seq[i], seq[i-1])
			}
		}
		first := firstToken(t, db)
		if len(seq) != workers*per || seq[0] != first || seq[len(seq)-1] != first+int64(len(seq))-1 {
			t.Fatalf("%d tokens from %d to %d (the epoch's first token is %d)", len(seq), seq[0], seq[len(seq)-1], first)
		}
		t.Logf("%d acquisitions by %d goroutines (half of the transactions rolled back, a quarter of the holders advisory leases): tokens E<<40 + 1..%d in order", len(seq), workers, len(seq))
		clean(t, db)
	})
}

// mustBegin begins a transaction on db that the test rolls back at its end
// if it is still open.
func mustBegin(t *testing.T, db *sql.DB) *sql.Tx {
	t.Helper()
	tx, err := db.BeginTx(ctxT(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

// firstToken is the first token of a key in the current epoch of the
// default fencing table: epoch<<40 + 1.
func firstToken(t *testing.T, db *sql.DB) int64 {
	t.Helper()
	var epoch int64
	if err := db.QueryRow("SELECT epoch FROM " + txlock.DefaultFenceTable).Scan(&epoch); err != nil {
		t.Fatalf("epoch: %v", err)
	}
	return epoch<<40 + 1
}
