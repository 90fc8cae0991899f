// Package itest gives integration tests a real PostgreSQL in one line.
//
// A test binary gets one server, started on first use and stopped when the
// binary ends; each test gets a fresh database on it, dropped on cleanup:
//
//	func TestMain(m *testing.M) { itest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		itest.EachDriver(t, func(t *testing.T, driver string) {
//			db := itest.Open(t, driver) // fresh database, closed and dropped on cleanup
//			...
//		})
//	}
//
// The server comes from the first of these that works:
//
//  1. the DSN in PGADVISORY_TEST_DSN (a role that may CREATE DATABASE);
//  2. Docker, through ory/dockertest, running the image named by
//     PGADVISORY_TEST_IMAGE, else the locally built pgadvisory/postgres:15
//     image if present, else the official postgres:15 image;
//  3. a throwaway cluster made with the local PostgreSQL binaries (initdb and
//     pg_ctl from PGBIN, else pg_config --bindir, else
//     /usr/lib/postgresql/*/bin) in a temporary directory, run as the
//     postgres user when the test runs as root.
//
// If none works the test is skipped, except when CI=true, where it fails with
// what was tried. PGADVISORY_TEST_MODE=env|docker|local forces one path.
//
// Everything itest starts it also stops and removes: containers, processes,
// temporary directories and databases.
package itest
