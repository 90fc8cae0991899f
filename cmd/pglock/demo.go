package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/lockview"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// demoOrder is the order whose total the demo's workers add to.
const demoOrder = 42

// demoResult is one line of the demo's table.
type demoResult struct {
	mode            string
	expected, final int
	took            time.Duration
}

// runDemo is "pglock demo".
func runDemo(ctx context.Context, c *command, env func(string) string, out, progress io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	db, where, cleanup, err := demoServer(ctx, c, env, progress)
	if err != nil {
		return err
	}
	defer cleanup()
	fmt.Fprintf(out, "server: %s\n", where)

	registerDemoNamespace()
	run := newDemoRun()
	acquire := newAcquirer(db, defaultKeepAlive, nil)
	// The owner key says, for as long as this demo runs, that its table is
	// in use; a demo killed before it could drop its table loses the key
	// with its session, and the next demo drops the table.
	owner, err := acquire(ctx, run.owner, false, true)
	if err != nil {
		return fmt.Errorf("demo: taking the key of table %s: %w", run.table, err)
	}
	defer func() { _ = releaseSoon(ctx, owner) }()
	swept, err := sweepDemoTables(ctx, db, acquire)
	if err != nil {
		return err
	}
	for _, t := range swept {
		fmt.Fprintf(out, "dropped table %s, left by a demo that was killed\n", t)
	}
	if _, err := db.ExecContext(ctx, "CREATE UNLOGGED TABLE "+run.table+" (id int PRIMARY KEY, total int NOT NULL)"); err != nil {
		return fmt.Errorf("demo: creating table %s: %w", run.table, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = db.ExecContext(dctx, "DROP TABLE IF EXISTS "+run.table)
	}()
	_, _ = db.ExecContext(ctx, "COMMENT ON TABLE "+run.table+" IS 'pglock demo: dropped when the demo ends, or by the next pglock demo if this one was killed'")
	fmt.Fprintf(out, "table %s and keys in namespace pglock-demo (%d), all gone at the end\n", run.table, demoNamespaceID)
	d := &demo{db: db, table: run.table, key: run.order, pause: c.pause, acquire: acquire}

	fmt.Fprintf(out, "%d workers each add 1 to order %d's total %d times: read it, pause %v, write it back.\n\n",
		c.workers, demoOrder, c.increments, c.pause)
	modes := []struct {
		name string
		inc  func(context.Context) error
	}{
		{"no lock", d.incNoLock},
		{"txlock", d.incTxlock},
		{"advisory", d.incAdvisory},
	}
	var results []demoResult
	for _, m := range modes {
		r, err := d.round(ctx, m.name, c.workers, c.increments, m.inc)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\texpected\tfinal\tlost\ttime\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%v\t\n", r.mode, r.expected, r.final, r.expected-r.final, r.took.Round(time.Millisecond))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(out, "\nWhile held, the lock shows in pg_locks as:")
	if err := d.showHeld(ctx, out); err != nil {
		return err
	}

	if results[0].final == results[0].expected {
		return fmt.Errorf("demo: no update was lost without a lock this time; run it again or raise --pause")
	}
	for _, r := range results[1:] {
		if r.final != r.expected {
			return fmt.Errorf("demo: %d updates lost under %s", r.expected-r.final, r.mode)
		}
	}
	fmt.Fprintln(out, "\nWithout a lock, concurrent read-modify-write loses updates; under either lock none is lost.")
	return nil
}

// demoServer connects to --dsn or DATABASE_URL when set, else starts a
// throwaway server through itest. cleanup stops what was started.
func demoServer(ctx context.Context, c *command, env func(string) string, progress io.Writer) (*sql.DB, string, func(), error) {
	if c.dsn != "" || env("DATABASE_URL") != "" {
		db, t, err := open(ctx, c, env, "pglock demo")
		if err != nil {
			return nil, "", nil, err
		}
		db.SetMaxOpenConns(c.workers + 4)
		return db, fmt.Sprintf("%s from %s", t.Addr(), t.from), func() { db.Close() }, nil
	}
	fmt.Fprintln(progress, "pglock demo: starting a throwaway PostgreSQL (set DATABASE_URL to use yours instead)")
	start := time.Now()
	srv, err := startThrowaway(ctx, env)
	if err != nil && ctx.Err() != nil {
		return nil, "", nil, fmt.Errorf("demo: interrupted while starting PostgreSQL: %w", ctx.Err())
	}
	if err != nil {
		return nil, "", nil, fmt.Errorf("demo: no PostgreSQL to run on (set DATABASE_URL to use yours): %w", err)
	}
	db, _, err := open(ctx, &command{dsn: srv.DSN("")}, env, "pglock demo")
	if err != nil {
		srv.Close()
		return nil, "", nil, fmt.Errorf("demo: connecting to the %s server at %s: %w", srv.Mode(), srv.Addr(), err)
	}
	db.SetMaxOpenConns(c.workers + 4)
	where := fmt.Sprintf("throwaway PostgreSQL (%s, started in %v) at %s, removed at the end",
		srv.Mode(), time.Since(start).Round(100*time.Millisecond), srv.Addr())
	if srv.Mode() == itest.ModeEnv {
		where = fmt.Sprintf("PostgreSQL from %s at %s", itest.EnvDSN, srv.Addr())
	}
	return db, where, func() {
		db.Close()
		srv.Close()
	}, nil
}

// startThrowaway starts a server through itest: the local binaries first,
// which start in a few seconds where they are installed, then Docker, unless
// PGADVISORY_TEST_DSN or PGADVISORY_TEST_MODE say otherwise.
func startThrowaway(ctx context.Context, env func(string) string) (*itest.Server, error) {
	if env(itest.EnvDSN) != "" || env(itest.EnvMode) != "" {
		return itest.Start(ctx, itest.Config{})
	}
	srv, err := itest.Start(ctx, itest.Config{Mode: itest.ModeLocal})
	if err == nil {
		return srv, nil
	}
	srv, derr := itest.Start(ctx, itest.Config{Mode: itest.ModeDocker})
	if derr != nil {
		return nil, errors.Join(err, derr)
	}
	return srv, nil
}

// demo holds what the rounds share.
type demo struct {
	db      *sql.DB
	table   string
	key     keyspace.Key
	pause   time.Duration
	acquire acquireFunc
}

// round resets the order, runs workers*increments increments concurrently
// with inc, and reads the final total.
func (d *demo) round(ctx context.Context, mode string, workers, increments int, inc func(context.Context) error) (demoResult, error) {
	if _, err := d.db.ExecContext(ctx, "INSERT INTO "+d.table+" (id, total) VALUES ($1, 0) ON CONFLICT (id) DO UPDATE SET total = 0", demoOrder); err != nil {
		return demoResult{}, fmt.Errorf("demo: resetting the order: %w", err)
	}
	start := time.Now()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < increments; i++ {
				if err := inc(ctx); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if first != nil {
		return demoResult{}, fmt.Errorf("demo: %s: %w", mode, first)
	}
	var final int
	if err := d.db.QueryRowContext(ctx, "SELECT total FROM "+d.table+" WHERE id = $1", demoOrder).Scan(&final); err != nil {
		return demoResult{}, fmt.Errorf("demo: reading the total: %w", err)
	}
	return demoResult{mode: mode, expected: workers * increments, final: final, took: took}, nil
}

// querier is what an increment reads and writes through.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// readModifyWrite is the racy increment: read, pause, write back plus one.
func (d *demo) readModifyWrite(ctx context.Context, q querier) error {
	var total int
	if err := q.QueryRowContext(ctx, "SELECT total FROM "+d.table+" WHERE id = $1", demoOrder).Scan(&total); err != nil {
		return err
	}
	if d.pause > 0 {
		t := time.NewTimer(d.pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	_, err := q.ExecContext(ctx, "UPDATE "+d.table+" SET total = $1 WHERE id = $2", total+1, demoOrder)
	return err
}

func (d *demo) incNoLock(ctx context.Context) error { return d.readModifyWrite(ctx, d.db) }

func (d *demo) incTxlock(ctx context.Context) error {
	return txlock.Do(ctx, d.db, d.key, func(tx *sql.Tx) error { return d.readModifyWrite(ctx, tx) })
}

func (d *demo) incAdvisory(ctx context.Context) error {
	lease, err := d.acquire(ctx, d.key, false, false)
	if err != nil {
		return err
	}
	err = d.readModifyWrite(ctx, d.db)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return errors.Join(err, lease.Release(rctx))
}

// showHeld takes the key once under each lock and prints its pg_locks rows
// as read from another connection.
func (d *demo) showHeld(ctx context.Context, out io.Writer) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "taken by\tkey\tpg_locks (classid, objid, objsubid)\tpid\tmode\tgranted")
	print := func(by string) error {
		locks, err := lockview.Read(ctx, d.db, false)
		if err != nil {
			return err
		}
		n := 0
		for _, l := range locks {
			if l.Key != d.key {
				continue
			}
			n++
			fmt.Fprintf(tw, "%s\t%s = %s\t(%d, %d, %d)\t%d\t%s\t%v\n",
				by, l.KeyName(), l.Key, l.ClassID, l.ObjID, l.ObjSubID, l.PID, l.Mode, l.Granted)
		}
		if n == 0 {
			return fmt.Errorf("demo: the %s lock does not show in pg_locks", by)
		}
		return nil
	}
	err := txlock.Do(ctx, d.db, d.key, func(*sql.Tx) error { return print("txlock.Do") })
	if err != nil {
		return err
	}
	lease, err := d.acquire(ctx, d.key, false, false)
	if err != nil {
		return err
	}
	err = print("advisory Lock")
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := errors.Join(err, lease.Release(rctx)); err != nil {
		return err
	}
	return tw.Flush()
}
