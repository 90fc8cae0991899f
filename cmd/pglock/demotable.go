package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// demoNamespaceID is the namespace of every key the demo takes, so that its
// locks cannot meet a real application's keys (whose namespaces are small
// numbers or their own hashes).
var demoNamespaceID = keyspace.Hash32("github.com/pgadvisory/pgadvisory/cmd/pglock demo")

// registerDemoNamespace names demoNamespaceID "pglock-demo" in this
// process, so that the demo's output shows its keys by name; an id that
// --names or PGLOCK_NAMESPACES already named keeps that name.
func registerDemoNamespace() { _, _ = keyspace.NewNamespace("pglock-demo", demoNamespaceID) }

// demoTableRE matches the demo's tables and nothing else.
var demoTableRE = regexp.MustCompile(`^pglock_demo_[0-9a-f]{8}$`)

// demoRun is one demo's table and keys: a name no application uses, with a
// random part so that demos on one database do not meet either.
type demoRun struct {
	table string       // pglock_demo_XXXXXXXX
	order keyspace.Key // the lock the workers take: (demo namespace, random id)
	owner keyspace.Key // held for the demo's life: the table's owner is alive
}

func newDemoRun() demoRun {
	var b [4]byte
	_, _ = rand.Read(b[:])
	r := binary.BigEndian.Uint32(b[:])
	table := fmt.Sprintf("pglock_demo_%08x", r)
	return demoRun{
		table: table,
		order: keyspace.Pair(demoNamespaceID, int32(r&0x7fffffff)),
		owner: keyspace.Pair(demoNamespaceID, keyspace.Hash32(table)),
	}
}

// ownerKey is the owner key of a demo table, as newDemoRun makes it.
func ownerKey(table string) keyspace.Key {
	return keyspace.Pair(demoNamespaceID, keyspace.Hash32(table))
}

// sweepDemoTables drops the tables of demos that were killed before they
// could drop their own (SIGKILL, a crash): a demo holds its table's owner key
// for as long as it runs, and a session lock ends with its session, so a
// table whose owner key is free has no demo left. It returns the tables
// dropped.
func sweepDemoTables(ctx context.Context, db *sql.DB, acquire acquireFunc) ([]string, error) {
	rows, err := db.QueryContext(ctx, `SELECT c.relname FROM pg_class c
		WHERE c.relkind = 'r' AND c.relname LIKE 'pglock\_demo\_%' AND pg_table_is_visible(c.oid)`)
	if err != nil {
		return nil, fmt.Errorf("demo: looking for tables of earlier demos: %w", err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return nil, fmt.Errorf("demo: looking for tables of earlier demos: %w", err)
		}
		if demoTableRE.MatchString(name) {
			tables = append(tables, name)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("demo: looking for tables of earlier demos: %w", err)
	}
	var dropped []string
	for _, table := range tables {
		lease, err := acquire(ctx, ownerKey(table), false, true)
		if errors.Is(err, errNotAcquired) {
			continue // a demo that runs now
		}
		if err != nil {
			return dropped, fmt.Errorf("demo: checking table %s: %w", table, err)
		}
		_, err = db.ExecContext(ctx, "DROP TABLE IF EXISTS "+table)
		err = errors.Join(err, releaseSoon(ctx, lease))
		if err != nil {
			return dropped, fmt.Errorf("demo: dropping table %s of a killed demo: %w", table, err)
		}
		dropped = append(dropped, table)
	}
	return dropped, nil
}

// releaseSoon releases lease, also when ctx has ended.
func releaseSoon(ctx context.Context, lease held) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return lease.Release(rctx)
}
