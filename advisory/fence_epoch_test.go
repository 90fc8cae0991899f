package advisory_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// tokenChain takes key with each Locker in turn and fails the test unless
// every token is above the one before.
type tokenChain struct {
	t    *testing.T
	ctx  context.Context
	key  keyspace.Key
	last int64
	log  []int64
}

func (c *tokenChain) take(what string, l *advisory.Locker) int64 {
	c.t.Helper()
	lease, err := l.Lock(c.ctx, c.key)
	if err != nil {
		c.t.Fatalf("%s: %v", what, err)
	}
	tok := lease.Token()
	if err := lease.Release(c.ctx); err != nil {
		c.t.Fatal(err)
	}
	if tok <= c.last {
		c.t.Fatalf("%s: token %d (epoch %d) after %d (epoch %d)", what, tok, tok>>40, c.last, c.last>>40)
	}
	c.last = tok
	c.log = append(c.log, tok)
	return tok
}

// onePool opens a pool of one connection to dsn: a Locker on it always
// uses the same backend session, which keeps what it learnt of the epoch.
func onePool(t *testing.T, driver, dsn string) *sql.DB {
	db := itest.OpenDSN(t, driver, dsn)
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	return db
}

// TestFencingRollover: when the draws reach the end of the epoch's window
// of 2^40, the token rolls over into the next epoch instead of overflowing
// into it: tokens keep increasing, from sessions that knew the old epoch,
// from new sessions and from txlock, and the epoch goes up by one.
func TestFencingRollover(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 60*time.Second)
		if err := advisory.CreateFenceTable(ctx, e.db, ""); err != nil {
			t.Fatal(err)
		}
		a, b := onePool(t, driver, e.dsn), onePool(t, driver, e.dsn)
		la := advisory.New(a, advisory.WithFencing(""))
		lb := advisory.New(b, advisory.WithFencing(""))
		c := &tokenChain{t: t, ctx: ctx, key: testKey(t)}
		c.take("a, first", la)
		c.take("b, first", lb) // both sessions know the epoch now
		epoch := epochOf(t, e.db, "")
		// Move the sequence to 2 below the window's end.
		var base int64
		if err := e.admin.QueryRowContext(ctx, "SELECT base FROM pgadvisory_fence").Scan(&base); err != nil {
			t.Fatal(err)
		}
		if _, err := e.admin.ExecContext(ctx, "SELECT setval('pgadvisory_fence_seq', $1::int8)", base+1<<40-3); err != nil {
			t.Fatal(err)
		}
		if tok := c.take("a, next to last of the window", la); tok != epoch<<40+1<<40-2 {
			t.Fatalf("token %d, want %d", tok, epoch<<40+1<<40-2)
		}
		if tok := c.take("b, last of the window", lb); tok != epoch<<40+1<<40-1 {
			t.Fatalf("token %d, want the epoch's last %d", tok, epoch<<40+1<<40-1)
		}
		if tok := c.take("a, rolled over", la); tok>>40 != epoch+1 {
			t.Fatalf("token %d of epoch %d, want epoch %d", tok, tok>>40, epoch+1)
		}
		c.take("b, in the new epoch", lb)
		c.take("a new session", advisory.New(onePool(t, driver, e.dsn), advisory.WithFencing("")))
		tx, err := e.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := txlock.LockToken(ctx, e.db, tx, c.key, "")
		if err != nil || tok <= c.last {
			t.Fatalf("txlock.LockToken after the rollover = %d, %v; want above %d", tok, err, c.last)
		}
		c.last = tok
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		c.take("a after txlock", la)
		if got := epochOf(t, e.db, ""); got != epoch+1 {
			t.Fatalf("epoch %d after one rollover, want %d", got, epoch+1)
		}
		t.Logf("tokens across the rollover: %v", c.log)
	})
}

// TestFencingLifetimeCache: a session that keeps the epoch of a server
// lifetime must not hand out tokens of it once another session started the
// next epoch. pg_stat_reset_shared('bgwriter') starts a new lifetime while
// every session lives on (on a private server: it would bump the epochs of
// other tests' tables on a shared one); a new session bumps the epoch, and
// the old session's next token is above the new session's.
func TestFencingLifetimeCache(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server of its own")
	}
	srv := itest.NewServer(t, itest.Config{})
	itest.EachDriver(t, func(t *testing.T, driver string) {
		dsn := srv.NewDatabase(t)
		ctx := timeout(t, 60*time.Second)
		a := onePool(t, driver, dsn)
		if err := advisory.CreateFenceTable(ctx, a, ""); err != nil {
			t.Fatal(err)
		}
		la := advisory.New(a, advisory.WithFencing(""))
		c := &tokenChain{t: t, ctx: ctx, key: keyspace.Hash(t.Name())}
		c.take("a, first", la)
		c.take("a, cached", la)
		if _, err := a.ExecContext(ctx, "SELECT pg_stat_reset_shared('bgwriter')"); err != nil {
			t.Fatal(err)
		}
		b := onePool(t, driver, dsn)
		tb := c.take("b, new lifetime", advisory.New(b, advisory.WithFencing("")))
		ta := c.take("a, after b's bump", la)
		t.Logf("tokens: %v (b's bump: epoch %d, a's next token: epoch %d)", c.log, tb>>40, ta>>40)
	})
}

// TestFencingEpochOncePerSession: a session reads the epoch row once; its
// later acquisitions draw tokens without touching the table, so they go
// through while another transaction holds the table in ACCESS EXCLUSIVE
// mode, where a new session's first acquisition, which reads the row,
// waits.
func TestFencingEpochOncePerSession(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, 60*time.Second)
		if err := advisory.CreateFenceTable(ctx, e.db, ""); err != nil {
			t.Fatal(err)
		}
		known := advisory.New(onePool(t, driver, e.dsn), advisory.WithFencing(""))
		c := &tokenChain{t: t, ctx: ctx, key: testKey(t)}
		c.take("first of the session", known)
		tx, err := e.admin.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, "LOCK TABLE pgadvisory_fence IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			c.take("the session again, table locked "+string(rune('1'+i)), known)
		}
		short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		fresh := advisory.New(onePool(t, driver, e.dsn), advisory.WithFencing(""))
		if lease, err := fresh.Lock(short, c.key); err == nil {
			lease.Release(ctx)
			t.Fatal("a new session got a token while the table was locked: it did not read the epoch")
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		c.take("the new session, table free", fresh)
	})
}
