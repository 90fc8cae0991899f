//go:build race

package main

// With -race, TestMain build the pglock binary with -race too, when
// the tests themselves run with -race.
func init() { buildFlags = append(buildFlags, "-race") }
