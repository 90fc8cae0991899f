package advisory

import (
	"strings"
	"testing"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// TestKeyListBounded: messages about a LockAll of many keys name the first
// few and the count, not every key.
func TestKeyListBounded(t *testing.T) {
	keys := make([]keyspace.Key, 10000)
	for i := range keys {
		keys[i] = keyspace.Int64(int64(i))
	}
	got := keyArg(keys).String()
	if want := "[0 1 2 3 4 5 6 7 … 10000 keys]"; got != want {
		t.Errorf("10,000 keys: %q, want %q", got, want)
	}
	if got := keyArg(keys[:3]).String(); got != "[0 1 2]" {
		t.Errorf("3 keys: %q", got)
	}
	if got := keyArg(keys[5:6]).String(); got != "5" {
		t.Errorf("1 key: %q", got)
	}
	if s := keyArg(keys).String(); strings.Count(s, " ") > maxKeysShown+3 {
		t.Errorf("message too long: %q", s)
	}
}
