package middleware

import (
	"net/http"
	"strconv"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// KeyFunc derives the lock key of a request. An error makes the middleware
// answer 400 (ErrBadKey) without calling the handler; it must not panic.
type KeyFunc func(*http.Request) (keyspace.Key, error)

// PathID returns a KeyFunc for integer ids within int32: it reads the path
// value name of a ServeMux pattern (r.PathValue) and gives ns.ID(n) for a
// decimal integer n in int32, as strconv.ParseInt reads it (an optional sign,
// then digits: "42", "-7", "+42" and "0042" are all ns.ID(42), as
// PostgreSQL reads them too). Anything else (empty, "abc", "4 2",
// "99999999999", a space) is an error wrapping ErrBadKey, so the middleware
// answers 400 without a round trip to the database.
//
// Use PathID for int4 (serial) ids, PathInt64 for bigint ids, and PathValue
// for names such as slugs.
func PathID(ns keyspace.Namespace, name string) KeyFunc {
	if name == "" {
		panic("middleware: PathID needs a path value name")
	}
	return func(r *http.Request) (keyspace.Key, error) {
		v := r.PathValue(name)
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return keyspace.Key{}, badPathValue(name, v, "an int32 id")
		}
		return ns.ID(int32(n)), nil
	}
}

// PathInt64 returns a KeyFunc for bigint ids: it reads the path value name
// (r.PathValue) and gives keyspace.Int64(n) for a decimal integer n in int64,
// read as PathID reads it; anything else is an error wrapping ErrBadKey (400,
// no round trip).
//
// The bigint key space has no namespaces: keyspace.Hash and every other
// client that locks bigint keys share it with these ids. Use it where one
// kind of resource owns the bigint space of the database, or where another
// program takes the same locks with pg_advisory_lock(id).
func PathInt64(name string) KeyFunc {
	if name == "" {
		panic("middleware: PathInt64 needs a path value name")
	}
	return func(r *http.Request) (keyspace.Key, error) {
		v := r.PathValue(name)
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return keyspace.Key{}, badPathValue(name, v, "an int64 id")
		}
		return keyspace.Int64(n), nil
	}
}

// PathValue returns a KeyFunc for names: it reads the path value name of a
// ServeMux pattern (r.PathValue) and maps it into ns:
//
//   - a decimal integer within int32 ("42", "-7", "0042") gives ns.ID(n), so
//     every spelling that strconv parses to the same id shares one lock;
//   - any other integer gives ns.Hash of its canonical decimal form;
//   - any other non-empty string gives ns.Hash(value);
//   - an empty or missing value is an error wrapping ErrBadKey (400).
//
// Every non-empty value takes a lock, and a round trip: for integer ids,
// PathID and PathInt64 answer 400 for anything else instead.
//
// Hashed keys share the 32-bit space of ns with the ids, so two resources may
// map to one key now and then: that serialises them needlessly, never lets
// two requests for the same resource run together.
func PathValue(ns keyspace.Namespace, name string) KeyFunc {
	if name == "" {
		panic("middleware: PathValue needs a path value name")
	}
	return func(r *http.Request) (keyspace.Key, error) {
		v := r.PathValue(name)
		if v == "" {
			return keyspace.Key{}, badPathValue(name, v, "a name")
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			if int64(int32(n)) == n {
				return ns.ID(int32(n)), nil
			}
			if c := strconv.FormatInt(n, 10); c != v {
				return ns.Hash(c), nil
			}
		}
		return ns.Hash(v), nil
	}
}
