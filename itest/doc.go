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
// Where no image registry is reachable, .ci/build-image.sh builds
// pgadvisory/postgres:15 from the machine's own PostgreSQL 15; it follows the
// official image's conventions (POSTGRES_USER, POSTGRES_DB,
// POSTGRES_HOST_AUTH_METHOD, POSTGRES_INITDB_ARGS, extra "-c name=value"
// arguments), so both images go through the same code.
//
// A server of a test's own (NewServer) can be restarted (Server.Restart: a
// fast shutdown and a start on the same address and data, cutting every
// session), crashed (Server.RestartImmediate: an immediate stop and a start,
// which runs crash recovery; Server.KillBackend: SIGKILL to one backend, after
// which the postmaster ends every session and recovers without restarting;
// both lose WAL that was still in the server's buffers) and, in Docker,
// frozen (Server.Pause and Unpause: the connections stay open and nothing
// answers, as in a network partition).
//
// Everything itest starts it also stops and removes: containers, processes,
// temporary directories and databases. If the test binary dies before its
// cleanup (a -timeout panic, SIGKILL), a small watchdog process stops the
// local cluster and removes its directory, or removes the container; a
// container left all the same is removed by the next test binary that starts
// one on the same host.
package itest
