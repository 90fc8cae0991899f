// Package fencing is runtime code that advisory, txlock and cmd/pglock share
// for fencing tokens: the arithmetic of a token, and the rare path that
// turns a draw of the fencing sequence into a token when the session does
// not know the epoch yet (once per backend session) or the draw left the
// epoch's window (once per 2^40 draws). The SQL is internal/sqltext's.
//
// The model. The fencing table holds one row: the epoch, the base of the
// epoch's window of draws, and the server lifetime that set the epoch. A
// draw s of the table's sequence with base < s < base + 2^40 has the token
// epoch<<40 + (s - base). A new epoch (a bump) starts when a session meets
// a row of another server lifetime (after a restart, a crash, a failover)
// or a draw beyond the window: epoch + 1, and a base B on the grid
// base + k*2^40 - 1 at least 2^32 above the draw, to which the sequence is
// moved forward. So every draw after the bump is above the windows of all
// earlier epochs, every token of the new epoch is above every earlier
// token, and a session that still caches an earlier epoch finds its draw
// outside that epoch's window and resolves it here. The bump commits
// durably; the draws commit asynchronously, and a crash that loses some is
// followed by a bump before any token of the new lifetime.
package fencing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
)

const (
	// CounterBits is how many low bits of a token count draws within an
	// epoch.
	CounterBits = sqltext.FenceCounterBits
	// Window is how many draws an epoch covers: draws base+1 .. base+Window-1.
	Window = int64(1) << CounterBits
	// MaxEpoch is the highest epoch whose tokens fit in an int64.
	MaxEpoch = int64(1)<<(63-CounterBits) - 1
	// margin is how far above the bumping session's draw a new base is at
	// least: draws of other sessions between that draw and the bump's
	// setval stay below it unless 2^32 of them come in between.
	margin = int64(1) << 32
	// attempts bounds the reads of the row of one resolution; each retry
	// means another session bumped the epoch meanwhile.
	attempts = 16
)

// Querier is what a resolution runs its statements on: an *sql.Conn (or a
// *sql.DB) outside any transaction block, so that a bump commits on its own.
type Querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Token returns the token of draw s in the epoch with base, and whether s
// is inside the epoch's window.
func Token(epoch, base, s int64) (int64, bool) {
	c := s - base
	if c < 1 || c >= Window || epoch < 0 || epoch > MaxEpoch {
		return 0, false
	}
	return epoch<<CounterBits + c, true
}

// CacheValue is the session setting's value for an epoch with base:
// "offset,limit", so that a draw s < limit (and above base, which every
// later draw of a session that read the row is) has the token s + offset.
func CacheValue(epoch, base int64) string {
	limit := int64(math.MaxInt64)
	if base <= math.MaxInt64-Window {
		limit = base + Window
	}
	return strconv.FormatInt(epoch<<CounterBits-base, 10) + "," + strconv.FormatInt(limit, 10)
}

// FromCache returns the token of draw s from a session's cache of the epoch
// (the setting's value, CacheValue's "offset,limit"), as the fenced
// statements compute it on the server: s + offset if s is below limit.
// False if the cache is empty, malformed, or does not cover s: the draw is
// then resolved (Resolve).
func FromCache(cache string, s int64) (int64, bool) {
	off, lim, ok := strings.Cut(cache, ",")
	if !ok {
		return 0, false
	}
	offset, err1 := strconv.ParseInt(off, 10, 64)
	limit, err2 := strconv.ParseInt(lim, 10, 64)
	if err1 != nil || err2 != nil || s >= limit {
		return 0, false
	}
	return s + offset, true
}

// nextBase is the base of the epoch after one with base, for a bump met by
// draw s: the least base + k*Window - 1 (k >= 1) that is at least s +
// margin. False if it does not fit in an int64.
func nextBase(base, s int64) (int64, bool) {
	if s > math.MaxInt64-margin || base < 0 {
		return 0, false
	}
	need := s + margin
	// base + k*Window - 1 >= need  <=>  k >= (need - base + 1) / Window.
	k := max((need-base)/Window+1, 1)
	if k > (math.MaxInt64-base)/Window {
		return 0, false
	}
	return base + k*Window - 1, true
}

// Resolve turns draw s of the sequence of table (a quoted identifier) into
// a token, on q: it reads the row, and when the epoch is of another server
// lifetime or s is outside its window, bumps it (durably) and draws again.
// It returns the token and the value the session setting should cache
// (sqltext.FenceSetCache). The caller holds the lock that the token is for.
func Resolve(ctx context.Context, q Querier, table string, s int64) (int64, string, error) {
	low := 0 // draws found below the window: another session's bump moved the sequence past them
	for range attempts {
		var epoch, base int64
		var current bool
		err := q.QueryRowContext(ctx, sqltext.FenceRead(table)).Scan(&epoch, &base, &current)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, "", pgerr.ErrNoFenceEpoch
		}
		if err != nil {
			return 0, "", Diagnose(ctx, q, table, err)
		}
		if current {
			if token, ok := Token(epoch, base, s); ok {
				return token, CacheValue(epoch, base), nil
			}
			if s <= base && low < 2 {
				// Drawn before a bump that moved the sequence past it
				// (the row read now is that bump's): draw again.
				low++
				if s, err = redraw(ctx, q, table); err != nil {
					return 0, "", err
				}
				continue
			}
		}
		if epoch >= MaxEpoch {
			return 0, "", pgerr.ErrFenceExhausted
		}
		b, ok := nextBase(base, s)
		if !ok {
			return 0, "", pgerr.ErrFenceExhausted
		}
		var bumped int64
		var moved sql.NullInt64
		err = q.QueryRowContext(ctx, sqltext.FenceBump(table, epoch, b)).Scan(&bumped, &moved)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			// Another session bumped it first: read its epoch.
		case err != nil:
			return 0, "", Diagnose(ctx, q, table, err)
		}
		// The sequence is now at b or beyond: a new draw is in the new
		// epoch's window (or a later one's, read on the next turn).
		if s, err = redraw(ctx, q, table); err != nil {
			return 0, "", err
		}
	}
	return 0, "", fmt.Errorf("the epoch of fencing table %s moved %d times while one token was resolved", table, attempts)
}

// redraw draws again from the sequence of table.
func redraw(ctx context.Context, q Querier, table string) (int64, error) {
	var s int64
	if err := q.QueryRowContext(ctx, sqltext.FenceRedraw(table)).Scan(&s); err != nil {
		return 0, Diagnose(ctx, q, table, err)
	}
	return s, nil
}

// SetCache stores the resolved epoch in the session of q (inside a
// transaction block, a rollback undoes it: the next draw resolves again)
// and returns the pid of the backend that stored it.
func SetCache(ctx context.Context, q Querier, table, value string) (int, error) {
	var v string
	var pid int
	err := q.QueryRowContext(ctx, sqltext.FenceSetCache(table, value)).Scan(&v, &pid)
	return pid, err
}

// Next draws a token from the sequence of table on conn (pinned, outside a
// transaction block), resolving the draw if the session's cache does not
// cover it.
func Next(ctx context.Context, conn Querier, table string) (int64, error) {
	var s, token sql.NullInt64
	if err := conn.QueryRowContext(ctx, sqltext.FenceDraw(table)).Scan(&s, &token); err != nil {
		return 0, Diagnose(ctx, conn, table, err)
	}
	if token.Valid {
		return token.Int64, nil
	}
	if !s.Valid {
		return 0, errors.New("the server returned no draw of the fencing sequence")
	}
	t, cache, err := Resolve(ctx, conn, table, s.Int64)
	if err != nil {
		return 0, err
	}
	_, err = SetCache(ctx, conn, table, cache)
	return t, err
}

// Layout is what a relation of the fencing table's name is.
type Layout int

const (
	Missing Layout = iota // no such table
	Current               // the current layout, with its sequence
	NoSeq                 // the current layout without its sequence
	Old                   // the per-key layout of earlier versions
	Other                 // anything else
)

// Check reports the layout of table (a quoted identifier).
func Check(ctx context.Context, q Querier, table string) (Layout, error) {
	var cols sql.NullString
	var seq bool
	if err := q.QueryRowContext(ctx, sqltext.FenceLayout(table)).Scan(&cols, &seq); err != nil {
		return Other, err
	}
	if !cols.Valid {
		return Missing, nil
	}
	names := strings.Split(cols.String, ",")
	switch {
	case slices.Equal(names, sqltext.FenceColumns) && seq:
		return Current, nil
	case slices.Equal(names, sqltext.FenceColumns):
		return NoSeq, nil
	case slices.Equal(names, sqltext.FenceOldColumns):
		return Old, nil
	}
	return Other, nil
}

// Diagnose maps err, the failure of a fencing statement on table, to the
// sentinel that names the fix when the table or its sequence is missing or
// of another layout (asking q what is there); other errors come back as
// they are. The server's error stays in the chain.
func Diagnose(ctx context.Context, q Querier, table string, err error) error {
	state := pgerr.SQLState(err)
	switch state {
	case pgerr.UndefinedTable, pgerr.UndefinedColumn, pgerr.InvalidColumnRef:
	default:
		return err
	}
	layout, cerr := Check(ctx, q, table)
	if cerr != nil {
		// A transaction in error cannot ask: go by the SQLSTATE.
		if state == pgerr.UndefinedTable {
			return fmt.Errorf("%w (%w)", pgerr.ErrNoFenceTable, err)
		}
		return fmt.Errorf("%w (%w)", pgerr.ErrFenceLayout, err)
	}
	switch layout {
	case Missing, NoSeq:
		return fmt.Errorf("%w (%w)", pgerr.ErrNoFenceTable, err)
	case Old:
		return fmt.Errorf("%w (%w)", pgerr.ErrFenceOldLayout, err)
	case Other:
		return fmt.Errorf("%w (%w)", pgerr.ErrFenceLayout, err)
	}
	return err
}
