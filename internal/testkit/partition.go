package testkit

import (
	"database/sql"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pgadvisory/pgadvisory/itest"
)

// The partition tests cut one client off from the server for real: its
// packets are dropped with iptables on the loopback interface, in both
// directions, by the client's own port. The server's kernel then hears
// nothing more from that client, as after a network partition or with a
// frozen host (a proxy inside the test process would still answer the
// server's kernel). They need root and iptables, and a server of their own
// reached over TCP on the loopback interface (itest's local mode: a Docker
// server is reached through a proxy process).

// EnvPartition, set to N, runs N trials of each partition test per driver
// and the controls; CI runs one trial each.
const EnvPartition = "PGADVISORY_TEST_PARTITION"

// PartitionTrials returns how many trials to run, or skips the test where
// it was not asked for (never under CI, where it must run). It fails the
// test if a partition cannot be made here.
func PartitionTrials(t testing.TB) int {
	t.Helper()
	n := 0
	if v := os.Getenv(EnvPartition); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			t.Fatalf("%s=%q: want a number of trials", EnvPartition, v)
		}
	} else if os.Getenv("CI") == "true" {
		n = 1
	}
	if n == 0 {
		t.Skipf("set %s=N to cut clients off with iptables (root)", EnvPartition)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("%s: a partition needs root (iptables)", EnvPartition)
	}
	if out, err := exec.Command("iptables", "-L", "INPUT", "-n").CombinedOutput(); err != nil {
		t.Fatalf("iptables cannot run here: %v: %s", err, out)
	}
	return n
}

// Controls reports whether the partition tests' controls (the same cut
// without the library's settings, 30 s each) run: only when asked for with
// EnvPartition.
func Controls() bool { return os.Getenv(EnvPartition) != "" }

// PartitionServer starts a server of the test's own for partition tests:
// local binaries, TCP on the loopback interface.
func PartitionServer(t testing.TB) *itest.Server {
	t.Helper()
	return itest.NewServer(t, itest.Config{Mode: itest.ModeLocal})
}

// Cut drops every packet between srv's port and the client's port until
// the returned function is called (at the latest at the end of the test).
func Cut(t testing.TB, srv *itest.Server, clientPort int) (heal func()) {
	t.Helper()
	_, sp, _ := strings.Cut(srv.Addr(), ":")
	rules := [][]string{
		{"INPUT", "-i", "lo", "-p", "tcp", "-s", "127.0.0.1", "-d", "127.0.0.1", "--sport", strconv.Itoa(clientPort), "--dport", sp, "-j", "DROP"},
		{"INPUT", "-i", "lo", "-p", "tcp", "-s", "127.0.0.1", "-d", "127.0.0.1", "--sport", sp, "--dport", strconv.Itoa(clientPort), "-j", "DROP"},
	}
	for _, r := range rules {
		if out, err := exec.Command("iptables", append([]string{"-I"}, r...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables -I %s: %v: %s", strings.Join(r, " "), err, out)
		}
	}
	var once sync.Once
	heal = func() {
		once.Do(func() {
			for _, r := range rules {
				if out, err := exec.Command("iptables", append([]string{"-D"}, r...)...).CombinedOutput(); err != nil {
					t.Errorf("iptables -D %s: %v: %s", strings.Join(r, " "), err, out)
				}
			}
		})
	}
	t.Cleanup(heal)
	return heal
}

// ClientPort returns the client's TCP port of backend pid, as the server
// sees it.
func ClientPort(t testing.TB, admin *sql.DB, pid int) int {
	t.Helper()
	var port sql.NullInt64
	if err := admin.QueryRow("SELECT client_port FROM pg_stat_activity WHERE pid = $1", pid).Scan(&port); err != nil {
		t.Fatalf("client port of backend %d: %v", pid, err)
	}
	if !port.Valid || port.Int64 <= 0 {
		t.Fatalf("backend %d is not on TCP", pid)
	}
	return int(port.Int64)
}
