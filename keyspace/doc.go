// Package keyspace names PostgreSQL advisory lock keys.
//
// PostgreSQL has two key spaces for advisory locks: one bigint, or a pair of
// int4. They never collide with each other: pg_advisory_lock(1) and
// pg_advisory_lock(0, 1) are different locks. A Key is either form; it is a
// small comparable value, usable as a map key, and its zero value is Int64(0).
//
// # Hashing names
//
// Hash maps a string to the bigint form: the first 8 bytes of MD5(name), read
// big-endian as a signed 64-bit integer. Any client can compute the same
// number; in SQL:
//
//	SELECT ('x' || substr(md5(name), 1, 16))::bit(64)::bigint;
//
// and in Python:
//
//	int.from_bytes(hashlib.md5(name.encode()).digest()[:8], "big", signed=True)
//
// so Go, Python, psql and any other client following the same rule contend on
// the same lock. For example Hash("payment:order-123") is 4312917370057361399.
//
// # Namespaces
//
// A Namespace reserves the first int4 of the pair form for one kind of
// resource: orders, tenants, jobs. Namespace.ID(n) is the pair (id, n);
// Namespace.Hash(name) is the pair (id, h) where h is the first 4 bytes of
// MD5(name), big-endian, signed:
//
//	SELECT ('x' || substr(md5(name), 1, 8))::bit(32)::int;
//
// Registering two namespaces with the same id or the same name in one process
// is an error, so two parts of a program cannot silently share a key space.
//
// # pg_locks
//
// pg_locks shows an advisory lock as (classid, objid, objsubid): objsubid 1 is
// the bigint form with classid the high and objid the low 32 bits, objsubid 2
// is the pair form with classid the first and objid the second int4; both are
// shown as unsigned oids. FromLock decodes such a row back into the Key.
package keyspace
