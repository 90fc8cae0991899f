//go:build race

package oteladvisory_test

// With -race, the SDK's slices.Grow of the span's attributes allocates
// twice (the race instrumentation keeps the make it otherwise elides).
func init() { spanAllocs++ }
