package keyspace_test

import (
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// FuzzParse: Parse never panics, its errors carry the package prefix, and
// whatever it accepts prints back to text that parses to the same key.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"0", "-1", "9223372036854775807", "-9223372036854775808", "9223372036854775808",
		"(1,2)", "1,2", " ( -2147483648 , 2147483647 ) ", "(2147483648,0)", "(1,2", "1,2)",
		"(1,2,3)", "()", "(,)", "", " ", "+5", "0x10", "1e3", "(1,)", "(,1)", "((1,2))",
		"١٢٣", "\x00", strings.Repeat("9", 65), "(" + strings.Repeat(" ", 70) + ")",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := keyspace.Parse(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "keyspace: ") {
				t.Fatalf("Parse(%q) error without the package prefix: %v", s, err)
			}
			if k != (keyspace.Key{}) {
				t.Fatalf("Parse(%q) returned key %v with error %v", s, k, err)
			}
			return
		}
		back, err := keyspace.Parse(k.String())
		if err != nil || back != k {
			t.Fatalf("Parse(%q) = %v, but Parse(%q) = %v, %v", s, k, k.String(), back, err)
		}
		// Accepted text is short and can only hold digits, signs, spaces,
		// parentheses and one comma.
		if len(s) > 64 {
			t.Fatalf("Parse accepted %d bytes", len(s))
		}
	})
}

// FuzzFromLock: every (classid, objid, objsubid) decodes to a key whose
// Lock gives the same columns back, or, for any objsubid but 1 and 2, to an
// error.
func FuzzFromLock(f *testing.F) {
	f.Add(uint32(0), uint32(0), int16(1))
	f.Add(uint32(math.MaxUint32), uint32(math.MaxUint32), int16(1))
	f.Add(uint32(0x80000000), uint32(0), int16(2))
	f.Add(uint32(7), uint32(8), int16(2))
	f.Add(uint32(1), uint32(2), int16(0))
	f.Add(uint32(1), uint32(2), int16(3))
	f.Add(uint32(1), uint32(2), int16(-1))
	f.Fuzz(func(t *testing.T, classid, objid uint32, objsubid int16) {
		k, err := keyspace.FromLock(classid, objid, objsubid)
		if objsubid != 1 && objsubid != 2 {
			if err == nil {
				t.Fatalf("FromLock(%d, %d, %d) = %v, want an error", classid, objid, objsubid, k)
			}
			if !strings.HasPrefix(err.Error(), "keyspace: ") {
				t.Fatalf("error without the package prefix: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("FromLock(%d, %d, %d): %v", classid, objid, objsubid, err)
		}
		c, o, s := k.Lock()
		if c != classid || o != objid || s != objsubid {
			t.Fatalf("FromLock(%d, %d, %d) = %v, whose Lock() is (%d, %d, %d)", classid, objid, objsubid, k, c, o, s)
		}
		if k.IsPair() != (objsubid == 2) {
			t.Fatalf("FromLock(..., %d) = %v: wrong form", objsubid, k)
		}
	})
}

// FuzzKeyRoundTrip: every bigint and every pair survives pg_locks decoding
// and the text form, and the order is total and consistent.
func FuzzKeyRoundTrip(f *testing.F) {
	f.Add(int64(0), int32(0), int32(0))
	f.Add(int64(math.MinInt64), int32(math.MinInt32), int32(math.MaxInt32))
	f.Add(int64(math.MaxInt64), int32(-1), int32(-1))
	f.Add(int64(-1), int32(1), int32(math.MinInt32))
	f.Fuzz(func(t *testing.T, n int64, a, b int32) {
		for _, k := range []keyspace.Key{keyspace.Int64(n), keyspace.Pair(a, b)} {
			back, err := keyspace.FromLock(k.Lock())
			if err != nil || back != k {
				t.Fatalf("%v -> Lock -> FromLock = %v, %v", k, back, err)
			}
			parsed, err := keyspace.Parse(k.String())
			if err != nil || parsed != k {
				t.Fatalf("%v -> String %q -> Parse = %v, %v", k, k.String(), parsed, err)
			}
		}
		if v, ok := keyspace.Int64(n).Int64(); !ok || v != n {
			t.Fatalf("Int64(%d).Int64() = %d, %v", n, v, ok)
		}
		if x, y, ok := keyspace.Pair(a, b).Pair(); !ok || x != a || y != b {
			t.Fatalf("Pair(%d, %d).Pair() = %d, %d, %v", a, b, x, y, ok)
		}
		i, p := keyspace.Int64(n), keyspace.Pair(a, b)
		if !i.Less(p) || p.Less(i) || keyspace.Compare(i, p) != -1 || keyspace.Compare(p, i) != 1 {
			t.Fatalf("order of %v and %v: bigint keys must sort first", i, p)
		}
		if keyspace.Compare(i, i) != 0 || i.Less(i) {
			t.Fatalf("%v is not equal to itself in the order", i)
		}
	})
}

// FuzzNamespace: NewNamespace never panics on any name or id; it refuses
// empty, over-long and invalid UTF-8 names with a prefixed error, and the
// keys of a namespace it accepts belong to it.
func FuzzNamespace(f *testing.F) {
	f.Add("fuzz-orders", int32(1), "order-17", int32(17))
	f.Add("", int32(0), "", int32(0))
	f.Add("fuzz-\xff", int32(-1), "x", int32(-1))
	f.Add(strings.Repeat("n", 201), int32(math.MaxInt32), "y", int32(math.MinInt32))
	f.Fuzz(func(t *testing.T, name string, id int32, member string, n int32) {
		// Keep clear of names other tests of this package may register.
		name = "fuzz-ns:" + name
		ns, err := keyspace.NewNamespace(name, id)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "keyspace: ") {
				t.Fatalf("error without the package prefix: %v", err)
			}
			if len(name) <= 200 && utf8.ValidString(name) && !strings.Contains(err.Error(), "already registered") {
				t.Fatalf("NewNamespace(%q, %d) refused a valid name: %v", name, id, err)
			}
			return
		}
		if len(name) > 200 || !utf8.ValidString(name) {
			t.Fatalf("NewNamespace accepted a bad name %q", name)
		}
		for _, k := range []keyspace.Key{ns.ID(n), ns.Hash(member)} {
			if !ns.Contains(k) {
				t.Fatalf("%v does not contain its own key %v", ns, k)
			}
		}
		if got, ok := keyspace.LookupNamespace(id); !ok || got.Name() != name {
			t.Fatalf("LookupNamespace(%d) = %v, %v", id, got, ok)
		}
	})
}
