package keyspace

import (
	"fmt"
	"strconv"
	"sync"
	"unicode/utf8"
)

// maxNamespaceName bounds a namespace name; it is a label for people, not data.
const maxNamespaceName = 200

// Namespace reserves the first int4 of the pair key form for one kind of
// resource. Create one with NewNamespace or MustNamespace; the zero Namespace
// is not registered and has id 0.
type Namespace struct {
	name string
	id   int32
}

var registry = struct {
	sync.Mutex
	byID   map[int32]string
	byName map[string]int32
}{byID: map[int32]string{}, byName: map[string]int32{}}

// NewNamespace registers a namespace with a name and an id. It returns an error
// if the name is empty, longer than 200 bytes or not valid UTF-8, or if another
// namespace in this process already has the same id or the same name.
// Registering the very same (name, id) twice is not an error: it returns the
// same Namespace, so package initialisation that runs twice in tests is safe.
// NewNamespace is safe for concurrent use.
func NewNamespace(name string, id int32) (Namespace, error) {
	switch {
	case name == "":
		return Namespace{}, fmt.Errorf("keyspace: namespace name is empty (id %d)", id)
	case len(name) > maxNamespaceName:
		return Namespace{}, fmt.Errorf("keyspace: namespace name is %d bytes long, the limit is %d", len(name), maxNamespaceName)
	case !utf8.ValidString(name):
		return Namespace{}, fmt.Errorf("keyspace: namespace name %q is not valid UTF-8", name)
	}
	registry.Lock()
	defer registry.Unlock()
	if other, ok := registry.byID[id]; ok && other != name {
		return Namespace{}, fmt.Errorf("keyspace: namespace id %d is already registered as %q, cannot register %q", id, other, name)
	}
	if other, ok := registry.byName[name]; ok && other != id {
		return Namespace{}, fmt.Errorf("keyspace: namespace name %q is already registered with id %d, cannot register id %d", name, other, id)
	}
	registry.byID[id] = name
	registry.byName[name] = id
	return Namespace{name: name, id: id}, nil
}

// MustNamespace is NewNamespace for package-level variables: it panics if the
// namespace cannot be registered, which is a programming error found at start.
func MustNamespace(name string, id int32) Namespace {
	ns, err := NewNamespace(name, id)
	if err != nil {
		panic(err)
	}
	return ns
}

// LookupNamespace returns the namespace registered in this process with id,
// for naming the pair keys found in pg_locks.
func LookupNamespace(id int32) (Namespace, bool) {
	registry.Lock()
	defer registry.Unlock()
	name, ok := registry.byID[id]
	if !ok {
		return Namespace{}, false
	}
	return Namespace{name: name, id: id}, true
}

// Name returns the namespace's name.
func (ns Namespace) Name() string { return ns.name }

// NamespaceID returns the namespace's id: the first int4 of its keys.
func (ns Namespace) NamespaceID() int32 { return ns.id }

// ID returns the key Pair(namespace id, n).
func (ns Namespace) ID(n int32) Key { return Pair(ns.id, n) }

// Hash returns the key Pair(namespace id, h) with h the first 4 bytes of
// MD5(name), big-endian, signed.
func (ns Namespace) Hash(name string) Key { return Pair(ns.id, Hash32(name)) }

// Contains reports whether k is a pair key in this namespace.
func (ns Namespace) Contains(k Key) bool {
	a, _, ok := k.Pair()
	return ok && a == ns.id
}

// String returns "name(id)".
func (ns Namespace) String() string {
	return ns.name + "(" + strconv.FormatInt(int64(ns.id), 10) + ")"
}
