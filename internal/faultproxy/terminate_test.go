package faultproxy_test

import (
	"context"
	"testing"

	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
)

// The server-side fault helpers of testkit, tested here next to the
// network-side ones.

func TestTerminateBackend(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		db := itest.Open(t, driver)
		ctx := context.Background()
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var pid int
		if err := conn.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		testkit.TerminateBackend(t, db, pid)
		if err := conn.QueryRowContext(ctx, "SELECT 1").Scan(new(int)); err == nil {
			t.Fatal("query on a terminated backend succeeded")
		}
		// Not a backend of this database: refused quietly.
		if ok, err := testkit.Terminate(ctx, db, 1); ok || err != nil {
			t.Fatalf("Terminate(pid 1) = %v, %v; want false, nil", ok, err)
		}
		conn.Close()
		testkit.WaitConnsIdle(t, db)
	})
}

func TestTerminateOthers(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		db := itest.Open(t, driver)
		ctx := context.Background()
		var conns []interface{ Close() error }
		for i := 0; i < 3; i++ {
			c, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.PingContext(ctx); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		if n := testkit.TerminateOthers(t, db); n < 3 {
			t.Fatalf("TerminateOthers = %d, want at least 3", n)
		}
		pids, err := testkit.Backends(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if len(pids) != 0 {
			t.Fatalf("backends left: %v", pids)
		}
		for _, c := range conns {
			c.Close()
		}
		testkit.WaitConnsIdle(t, db)
	})
}
