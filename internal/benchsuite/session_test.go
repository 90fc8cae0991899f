package benchsuite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// op is one measured operation. c is the goroutine's pinned connection for
// raw forms, nil for library forms (which take connections themselves).
type op func(ctx context.Context, c *sql.Conn, r rng) error

// form is one named way of doing the operation.
type form struct {
	name string
	pin  bool
	op   op
}

// runForms runs each form as a sub-benchmark "conns=N/form=NAME": with one
// connection as a plain loop, with more as RunParallel over that many
// goroutines sharing a pool of that size.
func runForms(b *testing.B, db *sql.DB, conns int, forms []form) {
	for _, f := range forms {
		b.Run(fmt.Sprintf("conns=%d/form=%s", conns, f.name), func(b *testing.B) {
			setPool(b, db, conns)
			ctx := context.Background()
			warmUp(b, db, conns, f.pin, f.op)
			b.ReportAllocs()
			if conns == 1 {
				var c *sql.Conn
				if f.pin {
					var err error
					if c, err = db.Conn(ctx); err != nil {
						b.Fatal(err)
					}
					defer c.Close()
				}
				r := newRNG()
				for b.Loop() {
					if err := f.op(ctx, c, r); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.SetParallelism(parallelism(conns))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var c *sql.Conn
				if f.pin {
					var err error
					if c, err = db.Conn(ctx); err != nil {
						b.Error(err)
						return
					}
					defer c.Close()
				}
				r := newRNG()
				for pb.Next() {
					if err := f.op(ctx, c, r); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// The raw statements a careful database/sql user writes: a parameter, or
// the integer written into the text (safe: it is formatted by strconv).
func rawLockParams(ctx context.Context, c *sql.Conn, fn string, n int64) error {
	_, err := c.ExecContext(ctx, "SELECT "+fn+"($1)", n)
	return err
}

func rawLockInline(ctx context.Context, c *sql.Conn, fn string, n int64) error {
	_, err := c.ExecContext(ctx, "SELECT "+fn+"("+strconv.FormatInt(n, 10)+")")
	return err
}

func rawBoolParams(ctx context.Context, c *sql.Conn, fn string, n int64) (bool, error) {
	var ok bool
	err := c.QueryRowContext(ctx, "SELECT "+fn+"($1)", n).Scan(&ok)
	return ok, err
}

func rawBoolInline(ctx context.Context, c *sql.Conn, fn string, n int64) (bool, error) {
	var ok bool
	err := c.QueryRowContext(ctx, "SELECT "+fn+"("+strconv.FormatInt(n, 10)+")").Scan(&ok)
	return ok, err
}

var errNotHeld = errors.New("benchsuite: unlock reported the lock was not held")

// pooledForm is "raw-pooled": the raw style s on a connection taken from
// db's pool for each lock and given back after the unlock, as a raw user
// does who does not dedicate a connection to locking (the library's way).
func pooledForm(db *sql.DB, s rawStyle) form {
	return form{name: "raw-pooled", op: func(ctx context.Context, _ *sql.Conn, r rng) error {
		c, err := db.Conn(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		return s.lockUnlock(ctx, c, r)
	}}
}

// rawStyle is one raw form: how the lock is taken and how a boolean
// function (unlock, try) is called.
type rawStyle struct {
	name    string
	lock    func(ctx context.Context, c *sql.Conn, fn string, n int64) error
	boolean func(ctx context.Context, c *sql.Conn, fn string, n int64) (bool, error)
}

var rawStyles = []rawStyle{
	{"raw-params", rawLockParams, rawBoolParams},
	{"raw-inline", rawLockInline, rawBoolInline},
}

// libraryOp is the library's form: l locks a random key and the lease
// is released.
func libraryOp(l *advisory.Locker) op {
	return func(ctx context.Context, _ *sql.Conn, r rng) error {
		k, _ := r.key()
		lease, err := l.Lock(ctx, k)
		if err != nil {
			return err
		}
		return lease.Release(ctx)
	}
}

// bestStyle returns the driver's best raw style: the integer in the text
// for lib/pq, a parameter for pgx.
func bestStyle(db *sql.DB) rawStyle {
	if sqltext.StyleOf(db.Driver()) == sqltext.Inline {
		return rawStyles[1] // raw-inline
	}
	return rawStyles[0] // raw-params
}

// lockUnlock takes a random key on c and unlocks it, in style s: the raw
// form's whole operation.
func (s rawStyle) lockUnlock(ctx context.Context, c *sql.Conn, r rng) error {
	n := r.next()
	if err := s.lock(ctx, c, "pg_advisory_lock", n); err != nil {
		return err
	}
	return s.unlock(ctx, c, n)
}

func (s rawStyle) unlock(ctx context.Context, c *sql.Conn, n int64) error {
	ok, err := s.boolean(ctx, c, "pg_advisory_unlock", n)
	if err == nil && !ok {
		err = errNotHeld
	}
	return err
}

// BenchmarkSessionLock: uncontended session lock+unlock of random keys,
// through advisory.Locker and through the raw forms on a pinned connection,
// with 1 connection and with 8 in parallel.
func BenchmarkSessionLock(b *testing.B) {
	eachDriver(b, func(b *testing.B, db *sql.DB) {
		l := advisory.New(db)
		forms := []form{{name: "library", op: libraryOp(l)}}
		for _, s := range rawStyles {
			forms = append(forms, form{name: s.name, pin: true, op: s.lockUnlock})
		}
		best := bestStyle(db)
		// Informational, not a baseline of the goals.
		forms = append(forms, pooledForm(db, best))
		// raw-deadline: the driver's best raw style with every statement
		// under a context that can end (a request's, or a timeout), as the
		// library's release always is: database/sql and the drivers then
		// start a watcher goroutine per statement. Informational, not a
		// baseline of the goals.
		forms = append(forms, form{name: "raw-deadline", pin: true, op: func(ctx context.Context, c *sql.Conn, r rng) error {
			n := r.next()
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := best.lock(dctx, c, "pg_advisory_lock", n); err != nil {
				return err
			}
			return best.unlock(dctx, c, n)
		}})
		for _, conns := range []int{1, 8} {
			runForms(b, db, conns, forms)
		}
	})
}

// BenchmarkTryLock: an uncontended try-lock and unlock, 8 connections.
func BenchmarkTryLock(b *testing.B) {
	eachDriver(b, func(b *testing.B, db *sql.DB) {
		l := advisory.New(db)
		forms := []form{{name: "library", op: func(ctx context.Context, _ *sql.Conn, r rng) error {
			k, _ := r.key()
			lease, err := l.TryLock(ctx, k)
			if err != nil {
				return err
			}
			return lease.Release(ctx)
		}}}
		for _, s := range rawStyles {
			forms = append(forms, form{name: s.name, pin: true, op: func(ctx context.Context, c *sql.Conn, r rng) error {
				n := r.next()
				ok, err := s.boolean(ctx, c, "pg_try_advisory_lock", n)
				if err != nil {
					return err
				}
				if !ok {
					return errors.New("benchsuite: try refused on a random key")
				}
				return s.unlock(ctx, c, n)
			}})
		}
		runForms(b, db, 8, forms)
	})
}

// BenchmarkLockAll: 10 random keys taken together and released, 8
// connections. The raw forms lock them one by one in sorted order (the order
// that avoids deadlocks) and unlock them one by one.
func BenchmarkLockAll(b *testing.B) {
	const n = 10
	eachDriver(b, func(b *testing.B, db *sql.DB) {
		l := advisory.New(db)
		forms := []form{{name: "library", op: func(ctx context.Context, _ *sql.Conn, r rng) error {
			keys := make([]keyspace.Key, n)
			for i := range keys {
				keys[i], _ = r.key()
			}
			lease, err := l.LockAll(ctx, keys...)
			if err != nil {
				return err
			}
			return lease.Release(ctx)
		}}}
		for _, s := range rawStyles {
			forms = append(forms, form{name: s.name, pin: true, op: func(ctx context.Context, c *sql.Conn, r rng) error {
				ns := make([]int64, n)
				for i := range ns {
					ns[i] = r.next()
				}
				slices.Sort(ns)
				for _, k := range ns {
					if err := s.lock(ctx, c, "pg_advisory_lock", k); err != nil {
						return err
					}
				}
				for _, k := range ns {
					if err := s.unlock(ctx, c, k); err != nil {
						return err
					}
				}
				return nil
			}})
		}
		runForms(b, db, 8, forms)
	})
}
