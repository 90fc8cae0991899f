package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/fencing"
	"github.com/pgadvisory/pgadvisory/internal/sqltext"
)

const fenceUsage = `Usage: pglock fence init [--table NAME] [--print]
       pglock fence migrate [--table NAME] [--print]
       pglock fence show [--table NAME] [NAME | --key K | --ns N ID]

The fencing table and sequence that advisory.WithFencing and txlock.LockToken
take their tokens from (see the package documentation of advisory).

  init        create the table, its sequence and its row if they do not exist;
              on a table of the per-key layout of earlier versions, fail and
              print the SQL that migrates it
  migrate     migrate a table of the per-key layout of earlier versions (one
              transaction; every later token is above the old ones)
  show        print the latest token the table has handed out (0: none yet),
              for any key: tokens come from one sequence, so the next token
              of every key is above it; with a key, the key first
  --table T   the table, optionally schema.table (default pgadvisory_fence)
  --print     print the SQL instead of running it
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
		return bad("fence needs a subcommand: init, migrate or show")
	}
	sub := args[0]
	switch sub {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(io.out, usage)
		return exitOK
	case "init", "migrate", "show":
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
	if sub == "show" {
		keyFlags(fs, &keyFlag, &nsFlag, &asName)
	} else {
		fs.BoolVar(&printSQL, "print", false, "")
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
	migration, err := advisory.FenceMigrateSQL(table)
	if err != nil {
		return bad(trimPrefix(err))
	}
	withKey := false
	if sub == "show" {
		if withKey = keyFlag != "" || fs.NArg() > 0; withKey {
			if err := c.pickKey(keyFlag, nsFlag, asName, fs.Args()); err != nil {
				return bad(err.Error())
			}
		} else if nsFlag != "" || asName {
			return bad("--ns and --name need a NAME or ID")
		}
	} else {
		if fs.NArg() > 0 {
			return bad(fmt.Sprintf("fence %s takes no arguments, got %q", sub, fs.Args()))
		}
		if printSQL {
			if sub == "init" {
				fmt.Fprintln(io.out, ddl+";")
			} else {
				fmt.Fprintln(io.out, migration+";")
			}
			return exitOK
		}
	}
	db, _, err := open(ctx, c, env, "pglock fence")
	if err != nil {
		return report(io, err)
	}
	defer db.Close()
	switch sub {
	case "init":
		err := advisory.CreateFenceTable(ctx, db, table)
		if errors.Is(err, advisory.ErrFenceOldLayout) {
			fmt.Fprintf(io.err, "pglock: the fencing table %s has the per-key layout of an earlier version; migrate it once with \"pglock fence migrate --table %s\", or run this SQL:\n\n%s;\n", table, table, migration)
			return exitError
		}
		if err != nil {
			return report(io, err)
		}
		fmt.Fprintf(io.out, "fencing table %s ready\n", table)
		return exitOK
	case "migrate":
		if err := advisory.MigrateFenceTable(ctx, db, table); err != nil {
			return report(io, err)
		}
		fmt.Fprintf(io.out, "fencing table %s ready\n", table)
		return exitOK
	}
	return report(io, fenceShow(ctx, db, c, withKey, table, io.out))
}

// fenceShow prints the latest token that table has handed out, after c.key
// if withKey.
func fenceShow(ctx context.Context, db *sql.DB, c *command, withKey bool, table string, out io.Writer) error {
	q, ok := sqltext.QuoteFenceTable(table)
	if !ok {
		return fmt.Errorf("bad table name %q", table)
	}
	var epoch, base int64
	var current bool
	var last sql.NullInt64
	err := db.QueryRowContext(ctx, sqltext.FenceStatus(q)).Scan(&epoch, &base, &current, &last)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("the fencing table %s has no epoch row: add it with \"pglock fence init --table %s\"", table, table)
	case err != nil:
		err = fencing.Diagnose(ctx, db, q, err)
		switch {
		case errors.Is(err, advisory.ErrNoFenceTable):
			return fmt.Errorf("the fencing table %s or its sequence does not exist: create them with \"pglock fence init --table %s\"", table, table)
		case errors.Is(err, advisory.ErrFenceOldLayout):
			return fmt.Errorf("the fencing table %s has the per-key layout of an earlier version: migrate it with \"pglock fence migrate --table %s\"", table, table)
		}
		return fmt.Errorf("reading the fencing table %s: %w", table, err)
	}
	var token int64
	if last.Valid {
		token, _ = fencing.Token(epoch, base, last.Int64)
	}
	if withKey {
		fmt.Fprintf(out, "%s\t", c.key)
	}
	fmt.Fprintf(out, "%d\n", token)
	return nil
}

// discard is io.Discard as a value of a named type (io is shadowed by stdio
// parameters in this package).
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
