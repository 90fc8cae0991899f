package middleware

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
	"github.com/pgadvisory/pgadvisory/txlock"
)

// TxLock returns middleware that runs each request in a transaction of db
// that holds a transaction advisory lock on the key keyFn derives from it.
// The handler gets the transaction from the request context (Tx) and must
// not commit or roll it back itself.
//
// The handler succeeds when the status it writes is below 400, or when it
// writes nothing at all (net/http then answers 200). The transaction ends
// when that status is known, before it is sent: at the first WriteHeader
// (1xx informational statuses aside), Write or Flush, or when the handler
// returns without writing. Below 400 it commits, and a failed commit is
// answered 500 (ErrCommitFailed) instead of the handler's status, whose
// later writes are then dropped (Write returns an error); from 400 on it
// rolls back. So do all the work on the transaction before writing the
// response: after that, Tx's transaction is done. If the handler panics, the
// transaction is rolled back and the panic continues.
//
// The wait policy, the waiter cap, the shared mode for safe methods and the
// answers are those of Lock: the key is tried first (one statement, as in
// fail-fast mode), and only with WaitUpTo is a busy key then waited for, in
// the same transaction, with the server's lock_timeout on that statement
// only. Beginning the transaction waits for a connection as long as the
// request context allows. The transaction is bound to the request context:
// a client that goes away rolls it back.
//
// The middleware and the handlers it wraps are safe for concurrent use; the
// MaxWaiters counts are shared by every handler one call of TxLock wraps.
//
// TxLock panics if db or keyFn is nil or an option is invalid.
func TxLock(db *sql.DB, keyFn KeyFunc, opts ...Option) func(http.Handler) http.Handler {
	if db == nil {
		panic("middleware: TxLock with a nil *sql.DB")
	}
	if keyFn == nil {
		panic("middleware: TxLock with a nil KeyFunc")
	}
	c := newConfig(opts)
	drv := txlock.WithDriver(db.Driver())
	h := &txHandler{db: db, keyFn: keyFn, cfg: &c, waiters: newWaiters(c.maxWaiters)}
	h.try = [2][]txlock.Option{{drv, txlock.WithTry()}, {drv, txlock.WithTry(), txlock.WithShared()}}
	if c.wait > 0 {
		lt := txlock.WithLockTimeout(c.wait)
		h.wait = [2][]txlock.Option{{drv, lt}, {drv, lt, txlock.WithShared()}}
	}
	return func(next http.Handler) http.Handler {
		if next == nil {
			panic("middleware: TxLock around a nil http.Handler")
		}
		hh := *h
		hh.next = next
		return &hh
	}
}

type txHandler struct {
	next    http.Handler
	db      *sql.DB
	keyFn   KeyFunc
	cfg     *config
	waiters *waiters
	// try and wait are the txlock options of the try and of the bounded
	// wait after a busy try, exclusive [0] and shared [1]; wait is nil when
	// the middleware fails fast.
	try, wait [2][]txlock.Option
}

type txKey struct{}

// Tx returns the transaction that TxLock opened for the request whose
// context ctx is, or nil.
func Tx(ctx context.Context) *sql.Tx {
	tx, _ := ctx.Value(txKey{}).(*sql.Tx)
	return tx
}

func (h *txHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := h.cfg
	key, err := h.keyFn(r)
	if err != nil {
		c.reject(w, r, keyspace.Key{}, badKey(err))
		return
	}
	mode := 0
	if c.sharedSafe && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		mode = 1
	}
	var start time.Time
	if c.hooks.Acquired != nil {
		start = time.Now()
	}
	tx, err := h.begin(r, key, mode)
	if err != nil {
		c.reject(w, r, key, err)
		return
	}
	if c.hooks.Acquired != nil {
		c.hooks.Acquired(r, key, time.Since(start))
	}

	tw := &txWriter{ResponseWriter: w, h: h, r: r, tx: tx, key: key}
	finished := false
	defer func() {
		if !finished { // the handler panicked
			_ = tx.Rollback()
		}
	}()
	h.next.ServeHTTP(tw, r.WithContext(context.WithValue(r.Context(), txKey{}, tx)))
	finished = true
	if !tw.decided {
		tw.decide(http.StatusOK) // no write: success; a failed commit is answered 500
	}
}

// begin opens the transaction and takes the lock (mode 0 exclusive, 1
// shared), mapping a failure to the reason the client is told; on failure
// nothing is left open. As in Lock, the key is tried first, and only a busy
// key is waited for (counted against MaxWaiters), in the same transaction:
// a refused try leaves it usable.
func (h *txHandler) begin(r *http.Request, key keyspace.Key, mode int) (*sql.Tx, error) {
	ctx := r.Context()
	tx, err := h.db.BeginTx(ctx, h.cfg.txOpts)
	if err != nil {
		return nil, fmt.Errorf("%w: begin: %w", ErrUnavailable, err)
	}
	err = txlock.Lock(ctx, tx, key, h.try[mode]...)
	if errors.Is(err, txlock.ErrNotAcquired) && h.wait[mode] != nil {
		if !h.waiters.enter(key) {
			_ = tx.Rollback()
			return nil, fmt.Errorf("%w: %w", ErrTooManyWaiters, err)
		}
		if f := h.cfg.hooks.Waiting; f != nil {
			f(r, key)
		}
		err = txlock.Lock(ctx, tx, key, h.wait[mode]...)
		h.waiters.leave(key)
	}
	if err == nil {
		return tx, nil
	}
	_ = tx.Rollback()
	switch {
	case errors.Is(err, txlock.ErrNotAcquired):
		return nil, fmt.Errorf("%w: %w", ErrBusy, err)
	case errors.Is(err, txlock.ErrLockTimeout):
		return nil, fmt.Errorf("%w: %w", ErrWaitTimeout, err)
	}
	return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// txWriter ends the transaction when the handler's status becomes known,
// before the status is sent.
type txWriter struct {
	http.ResponseWriter
	h       *txHandler
	r       *http.Request
	tx      *sql.Tx
	key     keyspace.Key
	decided bool // the transaction has ended
	failed  bool // the commit failed and the 500 went out instead
}

// decide commits (status < 400) or rolls back, and reports whether the
// handler's status may still be sent.
func (tw *txWriter) decide(status int) bool {
	tw.decided = true
	c := tw.h.cfg
	if status >= 400 {
		if err := tw.tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
			c.log(tw.r.Context(), slog.LevelError, "middleware: rollback failed", tw.r, tw.key, err)
		}
		return true
	}
	if err := tw.tx.Commit(); err != nil {
		tw.failed = true
		c.reject(tw.ResponseWriter, tw.r, tw.key, fmt.Errorf("%w: %w", ErrCommitFailed, err))
		return false
	}
	return true
}

// WriteHeader ends the transaction for status (but for 1xx) and sends it.
func (tw *txWriter) WriteHeader(status int) {
	switch {
	case tw.failed:
		return
	case tw.decided, status < 200:
		tw.ResponseWriter.WriteHeader(status)
	case tw.decide(status):
		tw.ResponseWriter.WriteHeader(status)
	}
}

// Write ends the transaction as a 200 if no status was written.
func (tw *txWriter) Write(b []byte) (int, error) {
	if !tw.decided {
		tw.decide(http.StatusOK)
	}
	if tw.failed {
		return 0, ErrCommitFailed
	}
	return tw.ResponseWriter.Write(b)
}

// Flush ends the transaction as a 200 if no status was written, then
// flushes if the underlying writer can.
func (tw *txWriter) Flush() {
	if !tw.decided {
		tw.decide(http.StatusOK)
	}
	if tw.failed {
		return
	}
	if f, ok := tw.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (tw *txWriter) Unwrap() http.ResponseWriter { return tw.ResponseWriter }
