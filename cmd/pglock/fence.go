package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/pgerr"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
)

const fenceUsage = `Usage: pglock fence init [--table NAME] [--print]
       pglock fence show [--table NAME] NAME | --key K | --ns N ID

The fencing counter table that advisory.WithFencing and txlock.LockToken take
their tokens from (see the package documentation of advisory).

  init        create the table and its epoch row if they do not exist
  show        print the latest token the table records for a key (0: none
              yet); after a server crash the latest one handed out can be
              higher, and the next one is higher than both
  --table T   the table, optionally schema.table (default pgadvisory_fence)
  --print     with init: print the SQL instead of running it
`

// runFence runs "pglock fence ..." (args after "fence") and returns the exit
// status. It parses its own flags: the subcommand comes first.
func runFence(ctx context.Context, args []string, env func(string) string, io stdio) int {
	usage := fenceUsage + "\n" + connUsage
	bad := func(msg string) int {
		fmt.Fprintf(io.err, "pglock: %s\n\n%s", msg, usage)
		return exitUsage
	}
	if len(args) == 0 {
		return bad("fence needs a subcommand: init or show")
	}
	sub := args[0]
	switch sub {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(io.out, usage)
		return exitOK
	case "init", "show":
	default:
		return bad(fmt.Sprintf("unknown fence subcommand %q", sub))
	}
	c := &command{name: "fence", usage: usage}
	fs := flag.NewFlagSet("pglock fence "+sub, flag.ContinueOnError)
	fs.SetOutput(discard{})
	fs.Usage = func() {}
	connFlags(fs, c)
	var table, keyFlag, nsFlag string
	var printSQL, asName bool
	fs.StringVar(&table, "table", advisory.DefaultFenceTable, "")
	if sub == "init" {
		fs.BoolVar(&printSQL, "print", false, "")
	} else {
		keyFlags(fs, &keyFlag, &nsFlag, &asName)
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(io.out, usage)
			return exitOK
		}
		return bad(err.Error())
	}
	ddl, err := advisory.FenceTableSQL(table)
	if err != nil {
		return bad(trimPrefix(err))
	}
	if sub == "init" {
		if fs.NArg() > 0 {
			return bad(fmt.Sprintf("fence init takes no arguments, got %q", fs.Args()))
		}
		if printSQL {
			fmt.Fprintln(io.out, ddl+";")
			return exitOK
		}
	} else if err := c.pickKey(keyFlag, nsFlag, asName, fs.Args()); err != nil {
		return bad(err.Error())
	}
	db, _, err := open(ctx, c, env, "pglock fence")
	if err != nil {
		return report(io, err)
	}
	defer db.Close()
	if sub == "init" {
		if err := advisory.CreateFenceTable(ctx, db, table); err != nil {
			return report(io, err)
		}
		fmt.Fprintf(io.out, "fencing table %s ready\n", table)
		return exitOK
	}
	return report(io, fenceShow(ctx, db, c, table, io.out))
}

// fenceShow prints the latest token of c.key.
func fenceShow(ctx context.Context, db *sql.DB, c *command, table string, out io.Writer) error {
	q, ok := sqltext.QuoteFenceTable(table)
	if !ok {
		return fmt.Errorf("bad table name %q", table)
	}
	query, args := sqltext.FenceCurrent(sqltext.Params, c.key, q)
	var token, epoch int64
	err := db.QueryRowContext(ctx, query, args...).Scan(&token, &epoch)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("the fencing table %s has no epoch row: add it with \"pglock fence init --table %s\"", table, table)
	case pgerr.SQLState(err) == pgerr.UndefinedTable:
		return fmt.Errorf("the fencing table %s does not exist: create it with \"pglock fence init --table %s\"", table, table)
	case err != nil:
		return fmt.Errorf("reading the token of %v: %w", c.key, pgerr.FenceError(err))
	}
	fmt.Fprintf(out, "%s\t%d\n", c.key, token)
	return nil
}

// discard is io.Discard as a value of a named type (io is shadowed by stdio
// parameters in this package).
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
