package keyspace_test

import (
	"fmt"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

func ExampleHash() {
	k := keyspace.Hash("payment:order-123")
	n, _ := k.Int64()
	fmt.Println(n)
	// The same number in SQL:
	//   SELECT ('x' || substr(md5('payment:order-123'), 1, 16))::bit(64)::bigint;
	fmt.Println(keyspace.Hash("daily-report-job"))
	// Output:
	// 4312917370057361399
	// 2900925584919938136
}

func ExampleNamespace() {
	orders := keyspace.MustNamespace("example-orders", 17)
	fmt.Println(orders)
	fmt.Println(orders.ID(42))
	// The second number in SQL:
	//   SELECT ('x' || substr(md5('order-123'), 1, 8))::bit(32)::int;
	fmt.Println(orders.Hash("order-123"))

	_, err := keyspace.NewNamespace("example-invoices", 17)
	fmt.Println(err)
	// Output:
	// example-orders(17)
	// (17,42)
	// (17,-215291846)
	// keyspace: namespace id 17 is already registered as "example-orders", cannot register "example-invoices"
}

func ExampleFromLock() {
	// A row of: SELECT classid, objid, objsubid FROM pg_locks WHERE locktype = 'advisory'
	k, err := keyspace.FromLock(1004179327, 1273071607, 1)
	fmt.Println(k, err, k == keyspace.Hash("payment:order-123"))

	k, err = keyspace.FromLock(17, 4294967295, 2)
	fmt.Println(k, err)

	c, o, s := keyspace.Pair(-1, 5).Lock()
	fmt.Println(c, o, s)
	// Output:
	// 4312917370057361399 <nil> true
	// (17,-1) <nil>
	// 4294967295 5 2
}
