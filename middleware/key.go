package middleware

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// KeyFunc derives the lock key of a request. An error makes the middleware
// answer 400 (ErrBadKey) without calling the handler; it must not panic.
type KeyFunc func(*http.Request) (keyspace.Key, error)

// errNoPathValue is the cause of ErrBadKey from PathValue.
var errNoPathValue = errors.New("middleware: empty or missing path value")

// PathValue returns a KeyFunc that reads the path value name of a Go 1.22
// ServeMux pattern (r.PathValue) and maps it into ns:
//
//   - a decimal integer within int32 ("42", "-7", "0042") gives ns.ID(n), so
//     every spelling that strconv parses to the same id shares one lock;
//   - any other integer gives ns.Hash of its canonical decimal form;
//   - any other non-empty string gives ns.Hash(value);
//   - an empty or missing value is an error (400).
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
			return keyspace.Key{}, errNoPathValue
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
