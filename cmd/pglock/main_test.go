package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/testkit"
)

// pglockBin is the pglock binary the tests run, built once by TestMain.
var pglockBin string

// buildFlags are the go build flags of pglockBin (race_test.go adds -race).
var buildFlags []string

// TestMain builds the binary, then does what testkit.Main does (run, stop
// itest's server, check for leaked goroutines), removing the binary before it
// exits.
func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "pglock-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pglock test: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	pglockBin = filepath.Join(dir, "pglock")
	args := append(append([]string{"build"}, buildFlags...), "-o", pglockBin, ".")
	build := exec.Command("go", args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "pglock test: go build:", err)
		return 1
	}
	return testkit.Run(m)
}

// cleanEnv is the test's environment without connection settings, so that
// only what a test passes reaches the binary.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PG") || name == "DATABASE_URL" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// result is how a pglock process ended.
type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d after %v\nstdout:\n%s\nstderr:\n%s", r.code, r.took, r.stdout, r.stderr)
}

// proc is a running pglock.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	start          time.Time
	done           chan result
}

// start runs pglock with env (added to the clean environment) and args.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(pglockBin, args...)
	cmd.Env = cleanEnv(env...)
	cmd.Dir = t.TempDir()
	p := &proc{cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan result, 1)}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	// A CMD left behind must not keep the test waiting on its pipes.
	cmd.WaitDelay = 5 * time.Second
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting pglock: %v", err)
	}
	go func() {
		err := cmd.Wait()
		r := result{code: cmd.ProcessState.ExitCode(), stdout: p.stdout.String(), stderr: p.stderr.String(), took: time.Since(p.start)}
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			r.stderr += "\n(wait: " + err.Error() + ")"
		}
		p.done <- r
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	return p
}

// wait waits up to d for the process to end.
func (p *proc) wait(t *testing.T, d time.Duration) result {
	t.Helper()
	select {
	case r := <-p.done:
		return r
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		r := <-p.done
		t.Fatalf("pglock %q did not end within %v; killed:\n%v", p.cmd.Args[1:], d, r)
		return r
	}
}

// pglock runs pglock to the end (at most a minute).
func pglock(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return start(t, env, args...).wait(t, time.Minute)
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor polls cond every 20 ms until it holds or d has passed.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waited %v for %s", d, what)
		case <-tick.C:
		}
	}
}
