package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// keyInfo is what "pglock key" prints; its JSON form is "pglock key --json".
type keyInfo struct {
	Key       string `json:"key"`
	Form      string `json:"form"` // bigint or pair
	Int64     *int64 `json:"int64,omitempty"`
	Pair      []int  `json:"pair,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	From      string `json:"from"` // how it was computed
	HashSQL   string `json:"hash_sql,omitempty"`
	Lock      string `json:"lock_sql"`
	TryLock   string `json:"try_lock_sql"`
	Unlock    string `json:"unlock_sql"`
	XactLock  string `json:"xact_lock_sql"`
	ClassID   uint32 `json:"classid"`
	ObjID     uint32 `json:"objid"`
	ObjSubID  int16  `json:"objsubid"`
	LocksSQL  string `json:"pg_locks_sql"`
}

// sqlString quotes s as an SQL string literal (standard_conforming_strings).
func sqlString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// describeKey works out everything "pglock key" shows. The SQL is for people
// to read and paste; pglock itself sends only the statements of sqltext.
func describeKey(c *command) keyInfo {
	k := c.key
	args := k.String()
	ki := keyInfo{Key: k.String()}
	if n, ok := k.Int64(); ok {
		ki.Form, ki.Int64 = "bigint", &n
	} else {
		a, b, _ := k.Pair()
		ki.Form, ki.Pair = "pair", []int{int(a), int(b)}
		args = strconv.Itoa(int(a)) + ", " + strconv.Itoa(int(b))
		if ns, ok := keyspace.LookupNamespace(a); ok {
			ki.Namespace = ns.Name()
		}
	}
	switch c.keyFrom {
	case fromNumber:
		ki.From = fmt.Sprintf("the number %s (a decimal integer is the key itself; --name %s hashes the text)", c.keyArg, c.keyArg)
	case fromName:
		ki.From = fmt.Sprintf("hash of %q (first 8 bytes of MD5, big-endian, signed)", c.keyArg)
		ki.HashSQL = "SELECT ('x' || substr(md5(" + sqlString(c.keyArg) + "), 1, 16))::bit(64)::bigint;"
	case fromNSName:
		a, _, _ := k.Pair()
		ki.From = fmt.Sprintf("namespace %d, hash of %q (first 4 bytes of MD5, big-endian, signed)", a, c.keyArg)
		ki.HashSQL = "SELECT ('x' || substr(md5(" + sqlString(c.keyArg) + "), 1, 8))::bit(32)::int;"
	case fromNSNumber:
		a, _, _ := k.Pair()
		ki.From = fmt.Sprintf("namespace %d, id %s", a, c.keyArg)
	default:
		ki.From = "given as --key"
	}
	ki.Lock = "SELECT pg_advisory_lock(" + args + ");"
	ki.TryLock = "SELECT pg_try_advisory_lock(" + args + ");"
	ki.Unlock = "SELECT pg_advisory_unlock(" + args + ");"
	ki.XactLock = "SELECT pg_advisory_xact_lock(" + args + ");  -- inside a transaction"
	ki.ClassID, ki.ObjID, ki.ObjSubID = k.Lock()
	ki.LocksSQL = fmt.Sprintf("SELECT pid, mode, granted FROM pg_locks WHERE locktype = 'advisory' AND classid = %d AND objid = %d AND objsubid = %d;",
		ki.ClassID, ki.ObjID, ki.ObjSubID)
	return ki
}

// runKey is "pglock key".
func runKey(c *command, out io.Writer) error {
	ki := describeKey(c)
	if c.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(ki)
	}
	ns := ""
	if ki.Namespace != "" {
		ns = ", namespace " + ki.Namespace
	}
	fmt.Fprintf(out, "key:       %s  (%s form%s)\n", ki.Key, ki.Form, ns)
	fmt.Fprintf(out, "from:      %s\n", ki.From)
	if ki.HashSQL != "" {
		fmt.Fprintf(out, "in SQL:    %s\n", ki.HashSQL)
	}
	fmt.Fprintf(out, "lock:      %s\n", ki.Lock)
	fmt.Fprintf(out, "try:       %s\n", ki.TryLock)
	fmt.Fprintf(out, "unlock:    %s\n", ki.Unlock)
	fmt.Fprintf(out, "xact lock: %s\n", ki.XactLock)
	fmt.Fprintf(out, "pg_locks:  classid = %d, objid = %d, objsubid = %d\n", ki.ClassID, ki.ObjID, ki.ObjSubID)
	fmt.Fprintf(out, "find it:   %s\n", ki.LocksSQL)
	return nil
}
