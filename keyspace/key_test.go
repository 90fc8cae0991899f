package keyspace_test

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// TestHashGolden pins the numbers the design documents; every other client
// (SQL, Python) computes the same ones.
func TestHashGolden(t *testing.T) {
	for _, c := range []struct {
		name string
		want int64
	}{
		{"payment:order-123", 4312917370057361399},
		{"daily-report-job", 2900925584919938136},
		{"", -3162216497309240828}, // md5("") = d41d8cd98f00b204...
	} {
		got, ok := keyspace.Hash(c.name).Int64()
		if !ok || got != c.want {
			t.Errorf("Hash(%q) = %d, %v; want %d", c.name, got, ok, c.want)
		}
	}
}

func TestKeyForms(t *testing.T) {
	if (keyspace.Key{}) != keyspace.Int64(0) {
		t.Error("the zero Key is not Int64(0)")
	}
	if keyspace.Int64(1) == keyspace.Pair(0, 1) {
		t.Error("Int64(1) == Pair(0, 1): the two key spaces must not collide")
	}
	for _, n := range []int64{0, 1, -1, math.MinInt64, math.MaxInt64} {
		k := keyspace.Int64(n)
		if v, ok := k.Int64(); !ok || v != n || k.IsPair() {
			t.Errorf("Int64(%d): Int64() = %d, %v; IsPair %v", n, v, ok, k.IsPair())
		}
		if _, _, ok := k.Pair(); ok {
			t.Errorf("Int64(%d).Pair() ok", n)
		}
	}
	for _, p := range [][2]int32{{0, 0}, {-1, -1}, {math.MinInt32, math.MaxInt32}, {math.MaxInt32, math.MinInt32}, {1, -2}} {
		k := keyspace.Pair(p[0], p[1])
		if a, b, ok := k.Pair(); !ok || a != p[0] || b != p[1] || !k.IsPair() {
			t.Errorf("Pair(%d, %d).Pair() = %d, %d, %v", p[0], p[1], a, b, ok)
		}
		if _, ok := k.Int64(); ok {
			t.Errorf("Pair(%d, %d).Int64() ok", p[0], p[1])
		}
	}
}

func TestStringParse(t *testing.T) {
	for _, c := range []struct {
		k    keyspace.Key
		text string
	}{
		{keyspace.Int64(0), "0"},
		{keyspace.Int64(-5), "-5"},
		{keyspace.Int64(math.MinInt64), "-9223372036854775808"},
		{keyspace.Int64(math.MaxInt64), "9223372036854775807"},
		{keyspace.Pair(1, -2), "(1,-2)"},
		{keyspace.Pair(math.MinInt32, math.MaxInt32), "(-2147483648,2147483647)"},
		{keyspace.Pair(0, 0), "(0,0)"},
	} {
		if got := c.k.String(); got != c.text {
			t.Errorf("String() = %q, want %q", got, c.text)
		}
		if got, err := keyspace.Parse(c.text); err != nil || got != c.k {
			t.Errorf("Parse(%q) = %v, %v; want %v", c.text, got, err, c.k)
		}
	}
	for text, want := range map[string]keyspace.Key{
		" 42 ":        keyspace.Int64(42),
		"3,4":         keyspace.Pair(3, 4),
		"( -3 , 4 )":  keyspace.Pair(-3, 4),
		"+7":          keyspace.Int64(7),
		"-0":          keyspace.Int64(0),
		"(0,-0)":      keyspace.Pair(0, 0),
		"\t(1,1)\n  ": keyspace.Pair(1, 1),
	} {
		if got, err := keyspace.Parse(text); err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", text, got, err, want)
		}
	}
	for _, bad := range []string{
		"", " ", "x", "1.5", "0x10", "9223372036854775808", "-9223372036854775809",
		"(1,2", "1,2)", "(1)", "(1,2,3)", "(2147483648,0)", "(0,-2147483649)", "(,)", "()",
		strings.Repeat("1", 65),
	} {
		k, err := keyspace.Parse(bad)
		if err == nil {
			t.Errorf("Parse(%q) = %v, want an error", bad, k)
			continue
		}
		if !strings.HasPrefix(err.Error(), "keyspace: ") {
			t.Errorf("Parse(%q) error %q lacks the package prefix", bad, err)
		}
	}
}

func TestLockColumns(t *testing.T) {
	for _, c := range []struct {
		k            keyspace.Key
		classid, obj uint32
		sub          int16
	}{
		{keyspace.Int64(0), 0, 0, 1},
		{keyspace.Int64(1), 0, 1, 1},
		{keyspace.Int64(-1), math.MaxUint32, math.MaxUint32, 1},
		{keyspace.Int64(math.MinInt64), 0x80000000, 0, 1},
		{keyspace.Int64(math.MaxInt64), 0x7fffffff, math.MaxUint32, 1},
		{keyspace.Int64(1 << 32), 1, 0, 1},
		{keyspace.Pair(0, 0), 0, 0, 2},
		{keyspace.Pair(-1, -1), math.MaxUint32, math.MaxUint32, 2},
		{keyspace.Pair(math.MinInt32, math.MaxInt32), 0x80000000, 0x7fffffff, 2},
		{keyspace.Pair(math.MaxInt32, math.MinInt32), 0x7fffffff, 0x80000000, 2},
		{keyspace.Pair(1, 2), 1, 2, 2},
	} {
		classid, obj, sub := c.k.Lock()
		if classid != c.classid || obj != c.obj || sub != c.sub {
			t.Errorf("%v.Lock() = (%d, %d, %d), want (%d, %d, %d)", c.k, classid, obj, sub, c.classid, c.obj, c.sub)
		}
		back, err := keyspace.FromLock(c.classid, c.obj, c.sub)
		if err != nil || back != c.k {
			t.Errorf("FromLock(%d, %d, %d) = %v, %v; want %v", c.classid, c.obj, c.sub, back, err, c.k)
		}
	}
	for _, sub := range []int16{0, 3, 4, -1, math.MaxInt16} {
		if k, err := keyspace.FromLock(1, 2, sub); err == nil || !strings.HasPrefix(err.Error(), "keyspace: ") {
			t.Errorf("FromLock(1, 2, %d) = %v, %v; want a keyspace error", sub, k, err)
		}
	}
}

func TestOrder(t *testing.T) {
	want := []keyspace.Key{
		keyspace.Int64(math.MinInt64), keyspace.Int64(-1), keyspace.Int64(0), keyspace.Int64(math.MaxInt64),
		keyspace.Pair(math.MinInt32, math.MinInt32), keyspace.Pair(math.MinInt32, math.MaxInt32),
		keyspace.Pair(-1, 0), keyspace.Pair(0, math.MinInt32), keyspace.Pair(0, -1), keyspace.Pair(0, 0),
		keyspace.Pair(math.MaxInt32, math.MaxInt32),
	}
	got := slices.Clone(want)
	slices.Reverse(got)
	slices.SortFunc(got, keyspace.Compare)
	if !slices.Equal(got, want) {
		t.Errorf("sorted: %v\nwant    %v", got, want)
	}
	for i := range want {
		for j := range want {
			if want[i].Less(want[j]) != (i < j) || (keyspace.Compare(want[i], want[j]) == 0) != (i == j) {
				t.Errorf("order of %v and %v is wrong", want[i], want[j])
			}
		}
	}
}

func TestNamespace(t *testing.T) {
	ns, err := keyspace.NewNamespace("unit-orders", 710001)
	if err != nil {
		t.Fatal(err)
	}
	if ns.Name() != "unit-orders" || ns.NamespaceID() != 710001 || ns.String() != "unit-orders(710001)" {
		t.Errorf("namespace fields: %q %d %q", ns.Name(), ns.NamespaceID(), ns.String())
	}
	if ns.ID(42) != keyspace.Pair(710001, 42) {
		t.Errorf("ID(42) = %v", ns.ID(42))
	}
	// The second int4 of Hash is the first 4 bytes of the 8 that Hash uses.
	for _, name := range []string{"", "order-123", "ключ", strings.Repeat("z", 10000)} {
		full, _ := keyspace.Hash(name).Int64()
		a, b, ok := ns.Hash(name).Pair()
		if !ok || a != 710001 || b != int32(full>>32) {
			t.Errorf("Hash(%q) = (%d, %d), want (710001, %d)", name, a, b, int32(full>>32))
		}
		if !ns.Contains(ns.Hash(name)) {
			t.Errorf("Contains(Hash(%q)) false", name)
		}
	}
	if ns.Contains(keyspace.Int64(710001)) || ns.Contains(keyspace.Pair(710002, 1)) {
		t.Error("Contains accepts a key of another space")
	}
	if got, ok := keyspace.LookupNamespace(710001); !ok || got != ns {
		t.Errorf("LookupNamespace = %v, %v", got, ok)
	}
	if _, ok := keyspace.LookupNamespace(710099); ok {
		t.Error("LookupNamespace found an unregistered id")
	}
	if again, err := keyspace.NewNamespace("unit-orders", 710001); err != nil || again != ns {
		t.Errorf("registering the same namespace again = %v, %v", again, err)
	}

	for _, c := range []struct {
		name, want string
		id         int32
	}{
		{"unit-tenants", "already registered", 710001},     // same id, other name
		{"unit-orders", "already registered", 710002},      // same name, other id
		{"", "empty", 710003},                              // no name
		{strings.Repeat("n", 201), "limit is 200", 710004}, // too long
		{"unit-\xff\xfe", "not valid UTF-8", 710005},       // not UTF-8
	} {
		got, err := keyspace.NewNamespace(c.name, c.id)
		if err == nil {
			t.Errorf("NewNamespace(%q, %d) = %v, want an error", c.name, c.id, got)
			continue
		}
		if !strings.HasPrefix(err.Error(), "keyspace: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewNamespace(%q, %d): %v, want a keyspace error with %q", c.name, c.id, err, c.want)
		}
	}
	if _, ok := keyspace.LookupNamespace(710002); ok {
		t.Error("a refused registration was recorded")
	}
	if _, err := keyspace.NewNamespace(strings.Repeat("é", 100), 710006); err != nil {
		t.Errorf("a 200-byte name was refused: %v", err)
	}

	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Error("MustNamespace with a taken id did not panic")
			}
		}()
		keyspace.MustNamespace("unit-other", 710001)
	}()
	if m := keyspace.MustNamespace("unit-must", 710007); m.ID(1) != keyspace.Pair(710007, 1) {
		t.Errorf("MustNamespace: %v", m)
	}
}
