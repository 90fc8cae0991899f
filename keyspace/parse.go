package keyspace

import (
	"fmt"
	"strconv"
	"strings"
)

// maxParse bounds the text Parse reads; no key is written in more than a few
// dozen bytes.
const maxParse = 64

// Parse reads a key written as Key.String writes it: "n" for the bigint form
// or "(a,b)" for the pair form (spaces around the numbers are allowed, and the
// parentheses may be left out: "a,b"). It returns an error that names the
// problem for anything else, including numbers out of range.
func Parse(s string) (Key, error) {
	if len(s) > maxParse {
		return Key{}, fmt.Errorf("keyspace: key text is %d bytes long, the limit is %d", len(s), maxParse)
	}
	t := strings.TrimSpace(s)
	if t == "" {
		return Key{}, fmt.Errorf("keyspace: empty key text")
	}
	if strings.HasPrefix(t, "(") != strings.HasSuffix(t, ")") {
		return Key{}, fmt.Errorf("keyspace: key %q has unbalanced parentheses", s)
	}
	inner := strings.TrimSuffix(strings.TrimPrefix(t, "("), ")")
	parts := strings.Split(inner, ",")
	switch len(parts) {
	case 1:
		if inner != t {
			return Key{}, fmt.Errorf("keyspace: key %q: a pair needs two numbers", s)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(parts[0]), 10, 64)
		if err != nil {
			return Key{}, fmt.Errorf("keyspace: key %q is not a 64-bit integer: %w", s, err)
		}
		return Int64(n), nil
	case 2:
		a, err := strconv.ParseInt(strings.TrimSpace(parts[0]), 10, 32)
		if err != nil {
			return Key{}, fmt.Errorf("keyspace: key %q: first value is not a 32-bit integer: %w", s, err)
		}
		b, err := strconv.ParseInt(strings.TrimSpace(parts[1]), 10, 32)
		if err != nil {
			return Key{}, fmt.Errorf("keyspace: key %q: second value is not a 32-bit integer: %w", s, err)
		}
		return Pair(int32(a), int32(b)), nil
	default:
		return Key{}, fmt.Errorf("keyspace: key %q has %d values, want 1 or 2", s, len(parts))
	}
}
