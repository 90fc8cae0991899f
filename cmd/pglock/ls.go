package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/lockview"
)

// lsRow is one line of "pglock ls --json".
type lsRow struct {
	Key             string     `json:"key"`
	Name            string     `json:"name"` // "ns/id" when the namespace is known, else key
	Form            string     `json:"form"` // bigint or pair
	Int64           *int64     `json:"int64,omitempty"`
	Pair            []int      `json:"pair,omitempty"`
	Namespace       string     `json:"namespace,omitempty"`
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
	BackendStart    *time.Time `json:"backend_start"`
	XactStart       *time.Time `json:"xact_start"`
	StateChange     *time.Time `json:"state_change"`
	WaitStart       *time.Time `json:"wait_start"`
	// WaitingSeconds is how long a waiter has waited; HeldAtMostSeconds is
	// the holder's session age, an upper bound of how long it has held the
	// lock (PostgreSQL does not record when a lock was granted).
	WaitingSeconds    float64 `json:"waiting_seconds,omitempty"`
	HeldAtMostSeconds float64 `json:"held_at_most_seconds,omitempty"`
}

func toRow(l lockview.Lock) lsRow {
	r := lsRow{
		Key: l.Key.String(), Name: l.KeyName(), Namespace: l.Namespace,
		ClassID: l.ClassID, ObjID: l.ObjID, ObjSubID: l.ObjSubID,
		Mode: "exclusive", Granted: l.Granted, PID: l.PID, Database: l.Database, User: l.User,
		ApplicationName: l.ApplicationName, ClientAddr: l.ClientAddr, State: l.State,
		BackendStart: l.BackendStart, XactStart: l.XactStart, StateChange: l.StateChange, WaitStart: l.WaitStart,
		WaitingSeconds:    l.Waiting().Seconds(),
		HeldAtMostSeconds: l.HeldAtMost().Seconds(),
	}
	if l.Shared() {
		r.Mode = "shared"
	}
	if n, ok := l.Key.Int64(); ok {
		r.Form, r.Int64 = "bigint", &n
	} else {
		a, b, _ := l.Key.Pair()
		r.Form, r.Pair = "pair", []int{int(a), int(b)}
	}
	return r
}

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
	rows := make([]lsRow, 0, len(locks))
	for _, l := range locks {
		rows = append(rows, toRow(l))
	}
	if c.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	if len(rows) == 0 {
		fmt.Fprintln(out, "no advisory locks held or awaited")
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tMODE\tSTATE\tFOR\tPID\tDATABASE\tAPPLICATION\tCLIENT\tSESSION")
	for _, r := range rows {
		state, dur := "held", "<= "+round(r.HeldAtMostSeconds)
		if !r.Granted {
			state, dur = "waiting", round(r.WaitingSeconds)
			if r.WaitStart == nil {
				dur = "?"
			}
		}
		client := r.ClientAddr
		if client == "" {
			client = "local"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n",
			r.Name, r.Mode, state, dur, r.PID, r.Database, dash(r.ApplicationName), client, dash(r.State))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// round formats seconds as a short duration.
func round(sec float64) string {
	d := time.Duration(sec * float64(time.Second))
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}
