package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// held is a lock that pglock run holds while CMD runs.
type held interface {
	// Lost is closed when the lock is no longer held (connection gone,
	// backend terminated, pid changed).
	Lost() <-chan struct{}
	// Err says why, once Lost is closed.
	Err() error
	// Release gives the lock back.
	Release(ctx context.Context) error
}

// errNotAcquired is how an acquire function says the lock is held elsewhere.
var errNotAcquired = errors.New("pglock: lock held elsewhere")

// acquireFunc takes key: waiting until ctx ends unless try, shared or not.
type acquireFunc func(ctx context.Context, key keyspace.Key, shared, try bool) (held, error)

// forwarded are the signals pglock run passes on to CMD.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

// runRun is "pglock run": take the lock, run CMD while holding it, release it.
func runRun(ctx context.Context, c *command, env func(string) string, io stdio) int {
	errf := func(format string, args ...any) {
		fmt.Fprintf(io.err, "pglock: "+format+"\n", args...)
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)

	// A signal while connecting or waiting ends pglock as the signal would
	// have: 128+N, nothing was run.
	waitCtx, cancelWait := context.WithCancel(ctx)
	var gotSig os.Signal
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		select {
		case s := <-sigs:
			gotSig = s
			cancelWait()
		case <-stopWatch:
		}
	}()
	endWatch := func() {
		close(stopWatch)
		<-watchDone
	}

	db, where, err := open(waitCtx, c, env, "pglock run "+c.label)
	if err != nil {
		endWatch()
		cancelWait()
		if gotSig != nil {
			return signalStatus(gotSig)
		}
		errf("%v", trimPrefix(err))
		if isConfig(err) {
			return exitConfig
		}
		return exitUnavailable
	}
	defer db.Close()
	var fence *string
	if c.fence {
		fence = &c.fenceTbl
	}
	acquire := newAcquirer(db, c.keepalive, fence)

	lockCtx := waitCtx
	if c.wait > 0 {
		var cancel context.CancelFunc
		lockCtx, cancel = context.WithTimeout(waitCtx, c.wait)
		defer cancel()
	}
	lease, err := acquire(lockCtx, c.key, c.shared, c.try)
	endWatch()
	cancelWait()
	switch {
	case err == nil && gotSig != nil:
		// Acquired just as a signal came: do not start CMD after all.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = lease.Release(rctx)
		return signalStatus(gotSig)
	case err == nil:
	case gotSig != nil:
		return signalStatus(gotSig)
	case errors.Is(err, errNotAcquired):
		errf("lock %s (key %s; pg_locks %s) is held elsewhere; not running %s", c.label, c.key, pgLocks(c.key), c.argv[0])
		return exitNotAcquired
	case c.wait > 0 && errors.Is(err, context.DeadlineExceeded):
		errf("lock %s (key %s; pg_locks %s) not acquired within %v; not running %s", c.label, c.key, pgLocks(c.key), c.wait, c.argv[0])
		return exitNotAcquired
	default:
		errf("taking lock %s (key %s) on %s: %v", c.label, c.key, where.Addr(), trimPrefix(err))
		return exitUnavailable
	}
	if !c.quiet {
		token := ""
		if t, ok := lease.(interface{ Token() int64 }); ok && c.fence {
			token = ", fencing token " + strconv.FormatInt(t.Token(), 10)
		}
		errf("holding lock %s: key %s (pg_locks %s)%s", c.label, c.key, pgLocks(c.key), token)
	}
	release := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			select {
			case <-lease.Lost():
				// Already gone with its session: nothing to release.
			default:
				errf("releasing lock %s: %v (it ends with the session)", c.label, err)
			}
		}
	}

	cmd := exec.Command(c.argv[0], c.argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = io.in, io.out, io.err
	cmd.Env = append(os.Environ(), "PGLOCK_KEY="+c.key.String())
	if t, ok := lease.(interface{ Token() int64 }); ok && c.fence {
		cmd.Env = append(cmd.Env, "PGLOCK_TOKEN="+strconv.FormatInt(t.Token(), 10))
	}
	// Its own process group, so that terminating it on loss reaches the
	// processes it started too (a shell's children).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		release()
		errf("cannot run %s: %v", c.argv[0], err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return exitNotFound
		}
		return exitCannotExec
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var (
		lost  bool
		lostC = lease.Lost()
		kill  <-chan time.Time
	)
wait:
	for {
		select {
		case s := <-sigs:
			_ = syscall.Kill(-pgid, s.(syscall.Signal))
		case <-lostC:
			lostC, lost = nil, true
			errf("lock %s lost while %s ran (%v): sending SIGTERM, SIGKILL in %v", c.label, c.argv[0], lease.Err(), c.grace)
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			t := time.NewTimer(c.grace)
			defer t.Stop()
			kill = t.C
		case <-kill:
			kill = nil
			errf("%s still running %v after SIGTERM: SIGKILL now", c.argv[0], c.grace)
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		case <-done:
			break wait
		}
	}
	// A loss seen just as CMD ended still counts: CMD may have run unlocked.
	select {
	case <-lease.Lost():
		if !lost {
			errf("lock %s lost as %s ended (%v)", c.label, c.argv[0], lease.Err())
		}
		lost = true
	default:
	}
	release()
	if lost {
		return exitLost
	}
	return exitStatus(cmd.ProcessState)
}

// exitStatus is CMD's status as a shell reports it: its exit code, or 128+N
// when signal N ended it.
func exitStatus(ps *os.ProcessState) int {
	if ps == nil {
		return exitCannotExec
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if code := ps.ExitCode(); code >= 0 {
		return code
	}
	return exitError
}

// signalStatus is the status of a process ended by s: 128+N.
func signalStatus(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return exitError
}
