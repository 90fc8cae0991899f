package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/lockview"
)

// lsOutput is what "pglock ls --json" prints: every advisory lock row, and
// the same rows arranged as who blocks whom.
type lsOutput struct {
	Locks    []lsRow     `json:"locks"`
	Blocking []blockNode `json:"blocking"`
}

// lsRow is one advisory lock row. Durations are whole milliseconds, null
// where PostgreSQL does not know them or they do not apply.
type lsRow struct {
	lsKey
	ClassID         uint32     `json:"classid"`
	ObjID           uint32     `json:"objid"`
	ObjSubID        int16      `json:"objsubid"`
	Mode            string     `json:"mode"` // exclusive or shared
	Granted         bool       `json:"granted"`
	PID             int        `json:"pid"`
	Database        string     `json:"database"`
	User            string     `json:"user"`
	ApplicationName string     `json:"application_name"`
	ClientAddr      string     `json:"client_addr"`
	State           string     `json:"state"`
	Now             time.Time  `json:"now"` // the server's clock when read
	BackendStart    *time.Time `json:"backend_start"`
	XactStart       *time.Time `json:"xact_start"`
	StateChange     *time.Time `json:"state_change"`
	WaitStart       *time.Time `json:"wait_start"`
	// WaitedMS is how long a waiter has waited (null for a holder, or
	// before PostgreSQL 14); XactAgeMS how long the session's transaction
	// has run (null outside one; a transaction lock is no older);
	// SessionAgeMS how long the session has existed (PostgreSQL does not
	// record when a lock was granted: a pooled connection is older than
	// its locks).
	WaitedMS     *int64 `json:"waited_ms"`
	XactAgeMS    *int64 `json:"xact_age_ms"`
	SessionAgeMS *int64 `json:"session_age_ms"`
	BlockedBy    []int  `json:"blocked_by"` // pg_blocking_pids of a waiter
	// Semaphore and Slot name the semaphore slot the key is (ls --sem).
	Semaphore string `json:"semaphore,omitempty"`
	Slot      *int   `json:"slot,omitempty"`
}

// lsKey is a key as ls shows it, decoded from pg_locks.
type lsKey struct {
	Key       string `json:"key"`
	Name      string `json:"name"` // "ns/id" when the namespace is known, else key
	Form      string `json:"form"` // bigint or pair
	Int64     *int64 `json:"int64,omitempty"`
	Pair      []int  `json:"pair,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

func toKey(l lockview.Lock) lsKey {
	k := lsKey{Key: l.Key.String(), Name: l.KeyName(), Namespace: l.Namespace}
	if n, ok := l.Key.Int64(); ok {
		k.Form, k.Int64 = "bigint", &n
	} else {
		a, b, _ := l.Key.Pair()
		k.Form, k.Pair = "pair", []int{int(a), int(b)}
	}
	return k
}

func mode(l lockview.Lock) string {
	if l.Shared() {
		return "shared"
	}
	return "exclusive"
}

// ms is d in whole milliseconds, nil when not known.
func ms(d time.Duration, ok bool) *int64 {
	if !ok {
		return nil
	}
	n := d.Milliseconds()
	return &n
}

func toRow(l lockview.Lock) lsRow {
	return lsRow{
		lsKey:   toKey(l),
		ClassID: l.ClassID, ObjID: l.ObjID, ObjSubID: l.ObjSubID,
		Mode: mode(l), Granted: l.Granted, PID: l.PID, Database: l.Database, User: l.User,
		ApplicationName: l.ApplicationName, ClientAddr: l.ClientAddr, State: l.State, Now: l.Now,
		BackendStart: l.BackendStart, XactStart: l.XactStart, StateChange: l.StateChange, WaitStart: l.WaitStart,
		WaitedMS: ms(l.Waited()), XactAgeMS: ms(l.XactAge()), SessionAgeMS: ms(l.SessionAge()),
		BlockedBy: l.BlockedBy,
	}
}

// lsLegend says what the duration columns measure.
const lsLegend = `WAITED: since the wait began (pg_locks.waitstart). IN XACT: since the session's
transaction began (a transaction lock is no older). SESSION AGE: since the session
began; PostgreSQL does not record when a lock was granted, and a pooled connection
is older than the locks it holds.
`

// runLs is "pglock ls".
func runLs(ctx context.Context, c *command, env func(string) string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	db, _, err := open(ctx, c, env, "pglock ls")
	if err != nil {
		return err
	}
	defer db.Close()
	locks, err := lockview.Read(ctx, db, c.all)
	if err != nil {
		return err
	}
	var slots []int
	if c.sem != "" {
		locks, slots = filterSem(locks, c.semSlotKeys())
	}
	tree := lockview.Blocking(locks)
	if c.json {
		o := lsOutput{Locks: make([]lsRow, 0, len(locks)), Blocking: toBlockNodes(tree)}
		for i, l := range locks {
			r := toRow(l)
			if slots != nil {
				r.Semaphore, r.Slot = c.sem, &slots[i]
			}
			o.Locks = append(o.Locks, r)
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(o)
	}
	if c.sem != "" {
		semSummary(out, c.sem, c.semSlots, locks, slots)
	}
	if len(locks) == 0 {
		fmt.Fprintln(out, "no advisory locks held or awaited")
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tMODE\tLOCK\tWAITED\tIN XACT\tSESSION AGE\tPID\tDATABASE\tAPPLICATION\tCLIENT\tSTATE")
	for i, l := range locks {
		name := l.KeyName()
		if slots != nil {
			name += " slot " + strconv.Itoa(slots[i])
		}
		status, waited := "held", "-"
		if !l.Granted {
			status, waited = "waiting", "?"
			if d, ok := l.Waited(); ok {
				waited = short(d)
			}
		}
		client := l.ClientAddr
		if client == "" {
			client = "local"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n",
			name, mode(l), status, waited, age(l.XactAge()), age(l.SessionAge()), l.PID, l.Database,
			dash(l.ApplicationName), client, dash(l.State))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprint(out, "\n"+lsLegend)
	if len(tree) > 0 {
		fmt.Fprintln(out, "\nWho blocks whom (each waiter under the session it waits behind):")
		printTree(out, tree)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func age(d time.Duration, ok bool) string {
	if !ok {
		return "-"
	}
	return short(d)
}

// short formats d with a precision that suits its size.
func short(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}
