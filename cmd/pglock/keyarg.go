package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// keySource is how a command line named its key.
type keySource int

const (
	fromNumber   keySource = iota + 1 // a decimal integer: keyspace.Int64(n)
	fromName                          // anything else, or --name: keyspace.Hash(name)
	fromNSNumber                      // --ns N and an int4: Namespace.ID(n)
	fromNSName                        // --ns N and a name: Namespace.Hash(name)
	fromKey                           // --key K, as written
)

// keyFlags are the flags that name a key. --hash is the older spelling of
// --name, kept so that existing command lines keep their meaning.
func keyFlags(fs *flag.FlagSet, keyFlag, nsFlag *string, asName *bool) {
	fs.StringVar(keyFlag, "key", "", "")
	fs.StringVar(nsFlag, "ns", "", "")
	fs.BoolVar(asName, "name", false, "")
	fs.BoolVar(asName, "hash", false, "")
}

// pickKey resolves the key from --key, --ns, --name and the positional
// argument. The rule: a decimal integer is the number itself; anything else,
// or any argument after --name, is a name and is hashed. Under --ns N the
// number is an int4 id and a name is hashed to one.
func (c *command) pickKey(keyFlag, nsFlag string, asName bool, pos []string) error {
	if keyFlag != "" {
		if nsFlag != "" || asName || len(pos) > 0 {
			return errors.New("--key names the key by itself: no NAME, ID, --ns or --name with it")
		}
		k, err := keyspace.Parse(keyFlag)
		if err != nil {
			return fmt.Errorf("--key: %w", err)
		}
		c.key, c.keyFrom, c.keyArg, c.label = k, fromKey, keyFlag, "--key "+k.String()
		return nil
	}
	if len(pos) != 1 {
		return errors.New("name the lock: NAME or ID, --name NAME, --key K, or --ns N NAME|ID")
	}
	arg := pos[0]
	number := !asName && looksInteger(arg)
	bits := 64
	if nsFlag != "" {
		bits = 32
	}
	var n int64
	if number {
		var err error
		if n, err = parseInteger(arg, bits); err != nil {
			return err
		}
	}
	c.keyArg, c.label = arg, arg
	if asName {
		c.label = "--name " + arg
	}
	if nsFlag == "" {
		if number {
			c.key, c.keyFrom = keyspace.Int64(n), fromNumber
		} else {
			c.key, c.keyFrom = keyspace.Hash(arg), fromName
		}
		return nil
	}
	id, err := c.nsID(nsFlag)
	if err != nil {
		return err
	}
	c.label = "--ns " + nsFlag + " " + c.label
	if number {
		c.key, c.keyFrom = keyspace.Pair(id, int32(n)), fromNSNumber
	} else {
		c.key, c.keyFrom = keyspace.Pair(id, keyspace.Hash32(arg)), fromNSName
	}
	return nil
}

// looksInteger reports whether s is written as a decimal integer: an
// optional sign and digits. Such an argument is never hashed silently: it is
// the number, or an error.
func looksInteger(s string) bool {
	t := strings.TrimLeft(s, "+-")
	if len(s)-len(t) > 1 || t == "" {
		return false
	}
	for _, r := range t {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// parseInteger reads a decimal integer of the given size. It refuses a
// leading "+" or zero, so that the text of the number is the key as
// PostgreSQL prints it, and says how to hash the text instead.
func parseInteger(s string, bits int) (int64, error) {
	n, err := strconv.ParseInt(s, 10, bits)
	if err != nil {
		what := "a bigint key"
		if bits == 32 {
			what = "an int4 id in a namespace"
		}
		return 0, fmt.Errorf("%s is out of range for %s; to hash it as a name, say --name %s", s, what, s)
	}
	if strconv.FormatInt(n, 10) != s {
		return 0, fmt.Errorf("%q: write the number as %d, or say --name %s to hash the text", s, n, s)
	}
	return n, nil
}

// nsID reads --ns: an int32, or a name from --names / PGLOCK_NAMESPACES.
func (c *command) nsID(s string) (int32, error) {
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		return int32(n), nil
	}
	for _, d := range c.names {
		if d.name == s {
			return d.id, nil
		}
	}
	return 0, fmt.Errorf("--ns %q is neither a 32-bit integer nor a namespace named in --names or PGLOCK_NAMESPACES", s)
}

// pgLocks says how key shows in pg_locks.
func pgLocks(k keyspace.Key) string {
	c, o, s := k.Lock()
	return fmt.Sprintf("classid %d, objid %d, objsubid %d", c, o, s)
}
