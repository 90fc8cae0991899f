package pgconf_test

import (
	"fmt"

	"github.com/pgadvisory/pgadvisory/internal/pgconf"
)

// Settings the connection string leaves out come from the PG* variables.
func ExampleResolve() {
	env := map[string]string{
		"DATABASE_URL": "postgres://app@db.internal/shop?sslmode=require",
		"PGPORT":       "6432",
		"PGPASSWORD":   "secret",
	}
	s, err := pgconf.Resolve("", func(k string) string { return env[k] }, "pglock")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s)
	fmt.Println(s.DSN())
	// Output:
	// db.internal:6432 (user "app", database "shop"; settings from DATABASE_URL)
	// postgres://app:secret@db.internal:6432/shop?application_name=pglock&connect_timeout=10&sslmode=require
}
