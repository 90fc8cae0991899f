package keyspace

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"strconv"
)

// Key is one advisory lock key: either the single bigint form or the pair of
// int4 form. Keys are comparable with == and usable as map keys. The zero Key
// is Int64(0).
type Key struct {
	v    int64 // the bigint, or the pair packed as a<<32 | uint32(b)
	pair bool
}

// Int64 returns the single-key (bigint) form.
func Int64(n int64) Key { return Key{v: n} }

// Pair returns the two-key (int4, int4) form.
func Pair(a, b int32) Key { return Key{v: int64(a)<<32 | int64(uint32(b)), pair: true} }

// Hash returns the bigint key for name: the first 8 bytes of MD5(name), read
// big-endian as a signed integer. See the package documentation for the same
// computation in SQL and Python.
func Hash(name string) Key {
	sum := md5.Sum([]byte(name))
	return Int64(int64(binary.BigEndian.Uint64(sum[:8])))
}

// Hash32 is the int4 that Namespace.Hash puts second in its pair: the first
// 4 bytes of MD5(name), big-endian, signed. It is exported for tools that
// build pair keys for a namespace id without registering the namespace.
func Hash32(name string) int32 {
	sum := md5.Sum([]byte(name))
	return int32(binary.BigEndian.Uint32(sum[:4]))
}

// Int64 returns the bigint and true if k is the single-key form.
func (k Key) Int64() (int64, bool) {
	if k.pair {
		return 0, false
	}
	return k.v, true
}

// Pair returns the two int4 values and true if k is the pair form.
func (k Key) Pair() (a, b int32, ok bool) {
	if !k.pair {
		return 0, 0, false
	}
	return int32(k.v >> 32), int32(k.v), true
}

// IsPair reports whether k is the two-key form.
func (k Key) IsPair() bool { return k.pair }

// String formats k as "n" for the bigint form and "(a,b)" for the pair form,
// which is how the key is written in SQL arguments.
func (k Key) String() string {
	if a, b, ok := k.Pair(); ok {
		return "(" + strconv.FormatInt(int64(a), 10) + "," + strconv.FormatInt(int64(b), 10) + ")"
	}
	return strconv.FormatInt(k.v, 10)
}

// Less orders keys: every bigint key before every pair key, then numerically
// (pairs by their first, then their second value). Every component of this
// module that takes several keys takes them in this order, so that two callers
// never wait on each other in opposite orders.
func (k Key) Less(o Key) bool {
	if k.pair != o.pair {
		return !k.pair
	}
	if !k.pair {
		return k.v < o.v
	}
	// The packed form holds b as unsigned; compare the signed halves.
	ka, kb, _ := k.Pair()
	oa, ob, _ := o.Pair()
	if ka != oa {
		return ka < oa
	}
	return kb < ob
}

// Compare returns -1, 0 or +1 as k sorts before, equal to or after o in the
// order of Less. It suits slices.SortFunc.
func Compare(k, o Key) int {
	switch {
	case k == o:
		return 0
	case k.Less(o):
		return -1
	default:
		return 1
	}
}

// Lock returns how k shows in pg_locks: classid, objid and objsubid.
func (k Key) Lock() (classid, objid uint32, objsubid int16) {
	if k.pair {
		return uint32(k.v >> 32), uint32(k.v), 2
	}
	return uint32(uint64(k.v) >> 32), uint32(k.v), 1
}

// FromLock decodes the (classid, objid, objsubid) columns of an advisory lock
// row in pg_locks into its Key. objsubid must be 1 (bigint form) or 2 (pair
// form).
func FromLock(classid, objid uint32, objsubid int16) (Key, error) {
	switch objsubid {
	case 1:
		return Int64(int64(uint64(classid)<<32 | uint64(objid))), nil
	case 2:
		return Pair(int32(classid), int32(objid)), nil
	default:
		return Key{}, fmt.Errorf("keyspace: pg_locks objsubid %d is not an advisory lock key form (want 1 for bigint or 2 for a pair)", objsubid)
	}
}
