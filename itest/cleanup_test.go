package itest_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ory/dockertest/v3"
	dc "github.com/ory/dockertest/v3/docker"

	"github.com/pgadvisory/pgadvisory/itest"
)

// procGone reports whether pid has exited (a zombie that its new parent has
// not reaped yet counts as exited).
func procGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) state ...: comm may hold spaces, the state follows the last ')'.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}

// children returns the live processes whose parent is pid.
func children(pid int) []int {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[1] != strconv.Itoa(pid) {
			continue
		}
		if f[0] == "Z" || f[0] == "X" {
			continue
		}
		if c, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			out = append(out, c)
		}
	}
	return out
}

// listening reports whether something accepts TCP connections at addr.
func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// dockerPool connects to the engine for inspecting containers.
func dockerPool(t *testing.T) *dockertest.Pool {
	t.Helper()
	pool, err := dockertest.NewPool("")
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

// containerImage returns the image name a container was created from.
func containerImage(t *testing.T, id string) string {
	t.Helper()
	c, err := dockerPool(t).Client.InspectContainer(id)
	if err != nil {
		t.Fatalf("inspect %s: %v", id, err)
	}
	return c.Config.Image
}

// containerGone reports whether the engine no longer knows container id.
func containerGone(pool *dockertest.Pool, id string) bool {
	_, err := pool.Client.InspectContainer(id)
	var nf *dc.NoSuchContainer
	return errors.As(err, &nf)
}

// waitFor polls cond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// checkLocalCleanup closes s, a ModeLocal server, and checks that the
// postmaster, its children and the watchdog have exited, the port is closed
// and the temp directory is gone.
func checkLocalCleanup(t *testing.T, s *itest.Server) {
	pid, dir, wd, addr := itest.LocalPID(s), itest.LocalDir(s), itest.WatchdogPID(s), s.Addr()
	kids := children(pid)
	if pid == 0 || dir == "" || wd == 0 || len(kids) == 0 {
		t.Fatalf("pid %d, dir %q, watchdog %d, children %v", pid, dir, wd, kids)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		t.Fatalf("no cluster in %s: %v", dir, err)
	}
	if !listening(addr) {
		t.Fatalf("nothing listens on %s", addr)
	}
	begin := time.Now()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close took %v; checked postmaster %d, %d children, watchdog %d, %s, %s",
		time.Since(begin).Round(time.Millisecond), pid, len(kids), wd, addr, dir)
	for _, p := range append([]int{pid, wd}, kids...) {
		if !procGone(p) {
			t.Errorf("process %d still runs after Close", p)
		}
	}
	if listening(addr) {
		t.Errorf("%s still accepts connections after Close", addr)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s still there after Close (%v)", dir, err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// checkDockerCleanup closes s, a ModeDocker server, and checks that the
// container and its watchdog are gone and the port is closed.
func checkDockerCleanup(t *testing.T, s *itest.Server) {
	id, addr, wd := s.ContainerID(), s.Addr(), itest.WatchdogPID(s)
	pool := dockerPool(t)
	if containerGone(pool, id) || !listening(addr) {
		t.Fatalf("container %s or %s not up", id, addr)
	}
	begin := time.Now()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close took %v; checked container %.12s, watchdog %d, %s", time.Since(begin).Round(time.Millisecond), id, wd, addr)
	if !containerGone(pool, id) {
		t.Errorf("container %.12s still exists after Close", id)
	}
	if wd != 0 && !procGone(wd) {
		t.Errorf("watchdog %d still runs after Close", wd)
	}
	if !waitFor(5*time.Second, func() bool { return !listening(addr) }) {
		t.Errorf("%s still accepts connections after Close", addr)
	}
}

// helperEnv makes the test binary, run again, act as a process that starts a
// server and is then killed before it can clean up.
const helperEnv = "ITEST_HELPER_MODE"

// TestHelperServer is the process that TestWatchdog kills; it does nothing
// in a normal run.
func TestHelperServer(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		return
	}
	s, err := itest.Start(ctxT(t, 2*time.Minute), itest.Config{Mode: itest.Mode(mode)})
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(3)
	}
	fmt.Printf("ready %d %s %s %s\n", itest.LocalPID(s), itest.LocalDir(s), s.Addr(), s.ContainerID())
	_, _ = io.Copy(io.Discard, os.Stdin) // until killed
	os.Exit(4)
}

// TestWatchdog kills (SIGKILL) a test binary that runs a server and checks
// that the server and everything it made go away all the same.
func TestWatchdog(t *testing.T) {
	for _, mode := range []itest.Mode{itest.ModeLocal, itest.ModeDocker} {
		t.Run(string(mode), func(t *testing.T) {
			if mode == itest.ModeDocker {
				if _, err := exec.LookPath("docker"); err != nil {
					t.Skip("the docker watchdog needs the docker command")
				}
			}
			ctx := ctxT(t, 2*time.Minute)
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperServer$", "-test.count=1")
			cmd.Env = append(os.Environ(), helperEnv+"="+string(mode), itest.EnvDSN+"=")
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			defer stdin.Close()
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var line string
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if line = sc.Text(); strings.HasPrefix(line, "ready ") || strings.HasPrefix(line, "error ") {
					break
				}
			}
			if !strings.HasPrefix(line, "ready ") {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				if mode == itest.ModeDocker {
					itest.Unavailable(t, errors.New(line))
				}
				t.Fatalf("helper: %q", line)
			}
			f := strings.Fields(line)
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			begin := time.Now()
			switch mode {
			case itest.ModeLocal:
				pid, _ := strconv.Atoi(f[1])
				dir, addr := f[2], f[3]
				ok := waitFor(30*time.Second, func() bool {
					_, err := os.Stat(dir)
					return procGone(pid) && errors.Is(err, os.ErrNotExist) && !listening(addr)
				})
				if !ok {
					t.Fatalf("after the helper died: postmaster %d gone %v, dir %s left", pid, procGone(pid), dir)
				}
			case itest.ModeDocker:
				id, addr := f[len(f)-1], f[len(f)-2]
				pool := dockerPool(t)
				if !waitFor(30*time.Second, func() bool { return containerGone(pool, id) && !listening(addr) }) {
					t.Fatalf("container %.12s left after the helper died", id)
				}
			}
			t.Logf("%s server gone %v after its test binary was killed", mode, time.Since(begin).Round(time.Millisecond))
		})
	}
}
