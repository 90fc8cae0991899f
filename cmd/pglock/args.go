package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// usageError is a command line that cannot be run: pglock prints the
// command's usage and exits with exitUsage.
type usageError struct {
	usage string // the usage text of the command concerned
	msg   string
}

func (e *usageError) Error() string { return e.msg }

// command is a parsed command line: what to do and with which settings. It
// is produced by parseArgs without side effects, so a fuzz test can drive it.
type command struct {
	name  string // key, ls, run, demo, help
	help  bool   // --help: print usage, exit 0
	usage string // the usage text of name

	dsn   string
	names []nsDef

	// key and run
	key     keyspace.Key
	keyFrom keySource // how the key was named
	keyArg  string    // the NAME hashed or the ID taken as it is
	label   string    // the key as named on the command line, for messages

	json bool // key, ls
	all  bool // ls: every database

	// ls --sem
	sem      string
	semNS    int32
	semSlots int

	// run
	try       bool
	wait      time.Duration // > 0: wait at most this long
	shared    bool
	quiet     bool // no "holding lock" line
	keepalive time.Duration
	grace     time.Duration
	fence     bool   // take a fencing token, handed to CMD in PGLOCK_TOKEN
	fenceTbl  string // the fencing table
	argv      []string

	// demo
	workers    int
	increments int
	pause      time.Duration
}

// nsDef is a namespace named on the command line or in PGLOCK_NAMESPACES.
type nsDef struct {
	name string
	id   int32
}

// Defaults of the run and demo flags.
const (
	defaultKeepAlive  = 2 * time.Second
	defaultGrace      = 5 * time.Second
	defaultWorkers    = 8
	defaultIncrements = 10
	defaultPause      = 5 * time.Millisecond
	maxArgs           = 4096
	defaultSemSlots   = 16
)

// parseArgs reads a whole command line (without the program name). env reads
// environment variables (PGLOCK_NAMESPACES). It never panics; every problem
// with the input is a *usageError.
func parseArgs(args []string, env func(string) string) (*command, error) {
	if env == nil {
		env = func(string) string { return "" }
	}
	if len(args) > maxArgs {
		return nil, &usageError{usage: mainUsage, msg: fmt.Sprintf("%d arguments, the limit is %d", len(args), maxArgs)}
	}
	if len(args) == 0 {
		return nil, &usageError{usage: mainUsage, msg: "no command given"}
	}
	c := &command{name: args[0]}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		c.name, c.help, c.usage = "help", true, mainUsage
		if len(args) > 1 {
			if u, ok := usages[args[1]]; ok {
				c.usage = u
			}
		}
		return c, nil
	}
	usage, ok := usages[args[0]]
	if !ok {
		return nil, &usageError{usage: mainUsage, msg: fmt.Sprintf("unknown command %q", args[0])}
	}
	c.usage = usage
	fs := flag.NewFlagSet("pglock "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}

	var nsFlag, keyFlag, namesFlag string
	var asName bool
	var wait durationFlag
	switch c.name {
	case "key":
		keyFlags(fs, &keyFlag, &nsFlag, &asName)
		fs.BoolVar(&c.json, "json", false, "")
		fs.StringVar(&namesFlag, "names", "", "")
	case "ls":
		connFlags(fs, c)
		fs.BoolVar(&c.json, "json", false, "")
		fs.BoolVar(&c.all, "all", false, "")
		fs.StringVar(&namesFlag, "names", "", "")
		fs.StringVar(&c.sem, "sem", "", "")
		fs.StringVar(&nsFlag, "ns", "", "")
		fs.IntVar(&c.semSlots, "slots", defaultSemSlots, "")
	case "run":
		connFlags(fs, c)
		keyFlags(fs, &keyFlag, &nsFlag, &asName)
		fs.StringVar(&namesFlag, "names", "", "")
		fs.BoolVar(&c.try, "try", false, "")
		fs.Var(&wait, "wait", "")
		fs.BoolVar(&c.shared, "shared", false, "")
		fs.BoolVar(&c.quiet, "quiet", false, "")
		fs.DurationVar(&c.keepalive, "keepalive", defaultKeepAlive, "")
		fs.DurationVar(&c.grace, "grace", defaultGrace, "")
		fs.BoolVar(&c.fence, "fence", false, "")
		fs.StringVar(&c.fenceTbl, "fence-table", "", "")
	case "demo":
		connFlags(fs, c)
		fs.IntVar(&c.workers, "workers", defaultWorkers, "")
		fs.IntVar(&c.increments, "increments", defaultIncrements, "")
		fs.DurationVar(&c.pause, "pause", defaultPause, "")
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.help = true
			return c, nil
		}
		return nil, &usageError{usage: usage, msg: err.Error()}
	}
	rest := fs.Args()
	// Did the flag package eat a "--" that ended the flags?
	consumed := len(args) - 1 - len(rest)
	dashed := consumed > 0 && args[consumed] == "--"

	defs, err := parseNames(env("PGLOCK_NAMESPACES"))
	if err != nil {
		return nil, &usageError{usage: usage, msg: "PGLOCK_NAMESPACES: " + err.Error()}
	}
	more, err := parseNames(namesFlag)
	if err != nil {
		return nil, &usageError{usage: usage, msg: "--names: " + err.Error()}
	}
	c.names = append(defs, more...)

	switch c.name {
	case "key":
		if len(rest) > 1 {
			return nil, &usageError{usage: usage, msg: fmt.Sprintf("unexpected arguments after the key: %q", rest[1:])}
		}
		if err := c.pickKey(keyFlag, nsFlag, asName, rest); err != nil {
			return nil, &usageError{usage: usage, msg: err.Error()}
		}
	case "ls", "demo":
		if len(rest) > 0 {
			return nil, &usageError{usage: usage, msg: fmt.Sprintf("unexpected arguments: %q", rest)}
		}
		if c.name == "ls" {
			if err := c.semFlags(nsFlag); err != nil {
				return nil, &usageError{usage: usage, msg: err.Error()}
			}
		}
		if c.name == "demo" {
			switch {
			case c.workers < 2 || c.workers > 64:
				return nil, &usageError{usage: usage, msg: "--workers must be from 2 to 64"}
			case c.increments < 1 || c.increments > 1000:
				return nil, &usageError{usage: usage, msg: "--increments must be from 1 to 1000"}
			case c.pause < 0 || c.pause > time.Second:
				return nil, &usageError{usage: usage, msg: "--pause must be from 0 to 1s"}
			}
		}
	case "run":
		var keyArgs []string
		switch {
		case dashed && keyFlag != "":
			// Flags ended with "--": the key came from --key, CMD follows.
			c.argv = rest
		case keyFlag != "":
			// pglock run --key K CMD...: no NAME.
			c.argv = rest
			if len(c.argv) > 0 && c.argv[0] == "--" {
				c.argv = c.argv[1:]
			}
		case len(rest) > 0:
			keyArgs, c.argv = rest[:1], rest[1:]
			if len(c.argv) > 0 && c.argv[0] == "--" {
				c.argv = c.argv[1:]
			}
		}
		if err := c.pickKey(keyFlag, nsFlag, asName, keyArgs); err != nil {
			return nil, &usageError{usage: usage, msg: err.Error()}
		}
		if len(c.argv) == 0 {
			return nil, &usageError{usage: usage, msg: "no command to run (pglock run NAME|ID -- CMD ARGS...)"}
		}
		switch {
		case c.try && wait.set:
			return nil, &usageError{usage: usage, msg: "--try and --wait exclude each other"}
		case wait.set && wait.d < 0:
			return nil, &usageError{usage: usage, msg: "--wait must not be negative"}
		case wait.set && wait.d == 0:
			c.try = true // --wait 0 is --try, as with flock -w 0
		case wait.set:
			c.wait = wait.d
		}
		if c.keepalive < 10*time.Millisecond {
			return nil, &usageError{usage: usage, msg: "--keepalive must be at least 10ms"}
		}
		if c.grace < 0 {
			return nil, &usageError{usage: usage, msg: "--grace must not be negative"}
		}
		if c.fenceTbl != "" && !c.fence {
			return nil, &usageError{usage: usage, msg: "--fence-table needs --fence"}
		}
		if _, err := advisory.FenceTableSQL(c.fenceTbl); c.fence && err != nil {
			return nil, &usageError{usage: usage, msg: "--fence-table: " + trimPrefix(err)}
		}
	}
	return c, nil
}

func connFlags(fs *flag.FlagSet, c *command) {
	fs.StringVar(&c.dsn, "dsn", "", "")
}

// parseNames reads "orders=1,jobs=2".
func parseNames(s string) ([]nsDef, error) {
	var out []nsDef
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, idText, ok := strings.Cut(part, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("%q is not name=id", part)
		}
		id, err := strconv.ParseInt(strings.TrimSpace(idText), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%q: id is not a 32-bit integer", part)
		}
		out = append(out, nsDef{name: strings.TrimSpace(name), id: int32(id)})
	}
	return out, nil
}

// durationFlag is a duration flag that remembers whether it was given.
type durationFlag struct {
	d   time.Duration
	set bool
}

func (f *durationFlag) String() string { return f.d.String() }

func (f *durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("not a duration (e.g. 30s, 2m)")
	}
	f.d, f.set = d, true
	return nil
}
