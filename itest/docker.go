package itest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ory/dockertest/v3"
	dc "github.com/ory/dockertest/v3/docker"
)

// Images that ModeDocker runs when PGADVISORY_TEST_IMAGE is not set: the
// image that .ci/build-image.sh builds from the machine's own PostgreSQL if
// it is present, else the official image.
const (
	LocalImage    = "pgadvisory/postgres:15"
	OfficialImage = "postgres:15"
)

// Labels on every container itest starts, so that containers of a test
// binary that died are found and removed by the next one.
const (
	labelItest = "pgadvisory.itest"
	labelPID   = "pgadvisory.itest.pid"
	labelHost  = "pgadvisory.itest.host"
)

// dockerServer is PostgreSQL in a container.
type dockerServer struct {
	pool *dockertest.Pool
	res  *dockertest.Resource
	dsn  string // maintenance database, for readiness checks
	logf func(string, ...any)

	mu     sync.Mutex
	paused bool

	// watchdog removes the container if this process dies without Close
	// (when the docker command line is installed); see startLocal's.
	watchdog *exec.Cmd
	wdPipe   *os.File
}

// chooseImage picks the image to run: PGADVISORY_TEST_IMAGE, else the locally
// built image if the engine has it, else the official image.
func chooseImage(pool *dockertest.Pool) string {
	if img := os.Getenv(EnvImage); img != "" {
		return img
	}
	if _, err := pool.Client.InspectImage(LocalImage); err == nil {
		return LocalImage
	}
	return OfficialImage
}

// splitImage splits "repo:tag" (the repository may hold a registry port).
func splitImage(img string) (repo, tag string) {
	if i := strings.LastIndex(img, ":"); i > strings.LastIndex(img, "/") {
		return img[:i], img[i+1:]
	}
	return img, "latest"
}

// dockerHost is the address where published ports are reached: the engine's
// host for a tcp:// endpoint, else the loopback.
func dockerHost(pool *dockertest.Pool) string {
	if u, err := url.Parse(pool.Client.Endpoint()); err == nil && (u.Scheme == "tcp" || u.Scheme == "http" || u.Scheme == "https") && u.Hostname() != "" {
		return u.Hostname()
	}
	return "127.0.0.1"
}

// startDocker runs PostgreSQL in a container through dockertest.
func startDocker(ctx context.Context, cfg Config, logf func(string, ...any)) (*Server, error) {
	begin := time.Now()
	pool, err := dockertest.NewPool("")
	if err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = pool.Client.PingWithContext(pctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("docker engine not reachable: %w", err)
	}
	reapOrphans(pool, logf)

	image := chooseImage(pool)
	repo, tag := splitImage(image)
	if _, err := pool.Client.InspectImage(repo + ":" + tag); err != nil {
		// Pull here, bounded, rather than in RunWithOptions, which pulls
		// without a deadline.
		logf("itest: pulling %s", image)
		pctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		err := pool.Client.PullImage(dc.PullImageOptions{Repository: repo, Tag: tag, Context: pctx, InactivityTimeout: 30 * time.Second}, dc.AuthConfiguration{})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("image %s is not present and cannot be pulled (build %s with .ci/build-image.sh, or set %s): %w", image, LocalImage, EnvImage, err)
		}
	}

	host := dockerHost(pool)
	hostname, _ := os.Hostname()
	cmd := append([]string{"postgres"}, settingArgs(cfg.Settings)...)
	var ds *dockerServer
	for attempt := 0; ; attempt++ {
		// A fixed host port, so that a restarted container is where it was
		// (a port that the engine picks changes on every start).
		port, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("docker: free port: %w", err)
		}
		// A name of its own, to remove the container if it was created but
		// could not start (RunWithOptions then returns no Resource).
		name := fmt.Sprintf("pgadvisory-itest-%d-%d-%d", os.Getpid(), time.Now().UnixNano(), attempt)
		res, err := pool.RunWithOptions(&dockertest.RunOptions{
			Name:       name,
			Repository: repo,
			Tag:        tag,
			Env: []string{
				"POSTGRES_USER=postgres",
				"POSTGRES_DB=postgres",
				"POSTGRES_HOST_AUTH_METHOD=trust",
				// A throwaway cluster needs no fsync at creation; it
				// saves seconds per container on a busy machine.
				"POSTGRES_INITDB_ARGS=--no-sync",
			},
			Cmd: cmd,
			Labels: map[string]string{
				labelItest: "1",
				labelPID:   strconv.Itoa(os.Getpid()),
				labelHost:  hostname,
			},
			PortBindings: map[dc.Port][]dc.PortBinding{
				"5432/tcp": {{HostIP: "127.0.0.1", HostPort: strconv.Itoa(port)}},
			},
		}, func(hc *dc.HostConfig) {
			hc.PublishAllPorts = false
			hc.RestartPolicy = dc.RestartPolicy{Name: "no"}
			hc.ShmSize = 256 << 20
		})
		if err != nil {
			if res != nil {
				_ = pool.Purge(res)
			} else {
				_ = pool.RemoveContainerByName(name)
			}
			if attempt < 2 && isPortConflict(err) {
				continue
			}
			return nil, fmt.Errorf("docker: run %s: %w", image, err)
		}
		s := &Server{mode: ModeDocker, host: host, port: port, user: "postgres"}
		ds = &dockerServer{pool: pool, res: res, dsn: s.DSN(""), logf: logf}
		s.backend = ds
		ds.startWatchdog()
		if err := ds.waitReady(ctx); err != nil {
			_ = ds.close()
			return nil, err
		}
		logf("itest: container %.12s (%s) on %s in %v", res.Container.ID, image, s.Addr(), time.Since(begin).Round(time.Millisecond))
		return s, nil
	}
}

// isPortConflict reports an engine error about a host port already in use.
func isPortConflict(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "port is already allocated") || strings.Contains(msg, "address already in use")
}

// waitReady polls the server until it answers, the container stops, or ctx
// ends. (It polls every 100 ms rather than through Pool.Retry, whose backoff
// grows to 5 s between tries and so adds seconds to every start.)
func (ds *dockerServer) waitReady(ctx context.Context) error {
	id := ds.res.Container.ID
	var last error
	for i := 0; ; i++ {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = ping(pctx, ds.dsn)
		cancel()
		if last == nil {
			return nil
		}
		if i%10 == 9 {
			c, err := ds.pool.Client.InspectContainerWithContext(id, ctx)
			if err == nil && !c.State.Running {
				return fmt.Errorf("docker: postgres did not come up: container exited with status %d%s", c.State.ExitCode, ds.logTail())
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("docker: postgres did not come up: %w (last: %v)%s", ctx.Err(), last, ds.logTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// logTail returns the end of the container's log for an error message.
func (ds *dockerServer) logTail() string {
	var out strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = ds.pool.Client.Logs(dc.LogsOptions{
		Context: ctx, Container: ds.res.Container.ID,
		OutputStream: &out, ErrorStream: &out, Stdout: true, Stderr: true, Tail: "20",
	})
	if out.Len() == 0 {
		return ""
	}
	return ": " + strings.TrimSpace(out.String())
}

// restart stops PostgreSQL with a fast shutdown (SIGINT, as the image's
// STOPSIGNAL), waits for the container to stop, and starts it again: the same
// container, data and host port.
func (ds *dockerServer) restart(ctx context.Context) error {
	return ds.stopAndStart(ctx, dc.SIGINT, "restart", "docker stop")
}

// crash stops PostgreSQL in immediate mode (SIGQUIT to the postmaster, the
// container's main process) and starts the container again, which runs
// crash recovery.
func (ds *dockerServer) crash(ctx context.Context) error {
	return ds.stopAndStart(ctx, dc.SIGQUIT, "crash", "docker kill -s QUIT")
}

// stopAndStart sends sig to the container's postmaster, waits for the
// container to stop (killing it if that takes over 30 s), and starts it
// again. what and how name the operation in errors.
func (ds *dockerServer) stopAndStart(ctx context.Context, sig dc.Signal, what, how string) error {
	id := ds.res.Container.ID
	ds.mu.Lock()
	paused := ds.paused
	ds.mu.Unlock()
	if paused {
		return fmt.Errorf("itest: cannot %s a paused server", what)
	}
	if err := ds.pool.Client.KillContainer(dc.KillContainerOptions{ID: id, Signal: sig, Context: ctx}); err != nil {
		return fmt.Errorf("itest: %s: %w", how, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := ds.pool.Client.WaitContainerWithContext(id, wctx)
	cancel()
	if err != nil {
		// The shutdown did not finish in time: kill it.
		_ = ds.pool.Client.KillContainer(dc.KillContainerOptions{ID: id, Signal: dc.SIGKILL})
		if _, err := ds.pool.Client.WaitContainerWithContext(id, ctx); err != nil {
			return fmt.Errorf("itest: docker wait: %w", err)
		}
	}
	if err := ds.pool.Client.StartContainerWithContext(id, nil, ctx); err != nil {
		return fmt.Errorf("itest: docker start: %w", err)
	}
	return ds.waitReady(ctx)
}

// kill sends SIGKILL to pid inside the container.
func (ds *dockerServer) kill(_ context.Context, pid int) error {
	if pid <= 1 {
		return fmt.Errorf("itest: %d is no backend", pid)
	}
	// The shell's kill: the image may have no kill binary.
	code, err := ds.res.Exec([]string{"/bin/sh", "-c", "kill -KILL " + strconv.Itoa(pid)}, dockertest.ExecOptions{})
	if err != nil {
		return fmt.Errorf("itest: docker exec kill: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("itest: docker exec kill %d: exit status %d", pid, code)
	}
	return nil
}

// close removes the container and its volumes and ends the watchdog.
func (ds *dockerServer) close() error {
	err := ds.pool.Purge(ds.res)
	if err != nil {
		var nf *dc.NoSuchContainer
		if errors.As(err, &nf) {
			err = nil
		} else {
			err = fmt.Errorf("itest: docker purge %.12s: %w", ds.res.Container.ID, err)
		}
	}
	if ds.wdPipe != nil {
		_, _ = ds.wdPipe.WriteString("closed\n")
		ds.wdPipe.Close()
		_ = ds.watchdog.Wait()
		ds.wdPipe = nil
	}
	return err
}

// Pause freezes every process of a ModeDocker server (docker pause): its
// connections stay open but nothing answers, as in a network partition.
// It is an error in other modes.
func (s *Server) Pause(ctx context.Context) error {
	ds, ok := s.backend.(*dockerServer)
	if !ok {
		return fmt.Errorf("itest: Pause needs a docker server, this one is %s", s.mode)
	}
	if err := ds.pool.Client.PauseContainer(ds.res.Container.ID); err != nil {
		return fmt.Errorf("itest: docker pause: %w", err)
	}
	ds.mu.Lock()
	ds.paused = true
	ds.mu.Unlock()
	return ctx.Err()
}

// Unpause resumes a server that Pause froze. It is an error in other modes.
func (s *Server) Unpause(ctx context.Context) error {
	ds, ok := s.backend.(*dockerServer)
	if !ok {
		return fmt.Errorf("itest: Unpause needs a docker server, this one is %s", s.mode)
	}
	if err := ds.pool.Client.UnpauseContainer(ds.res.Container.ID); err != nil {
		return fmt.Errorf("itest: docker unpause: %w", err)
	}
	ds.mu.Lock()
	ds.paused = false
	ds.mu.Unlock()
	return ctx.Err()
}

// ContainerID returns the container of a ModeDocker server, else "".
func (s *Server) ContainerID() string {
	if ds, ok := s.backend.(*dockerServer); ok {
		return ds.res.Container.ID
	}
	return ""
}

// reapOrphans removes containers that itest started on this host for a
// process that no longer exists (a test binary killed before its cleanup).
func reapOrphans(pool *dockertest.Pool, logf func(string, ...any)) {
	hostname, _ := os.Hostname()
	cs, err := pool.Client.ListContainers(dc.ListContainersOptions{
		All:     true,
		Filters: map[string][]string{"label": {labelItest + "=1", labelHost + "=" + hostname}},
	})
	if err != nil {
		return
	}
	for _, c := range cs {
		pid, err := strconv.Atoi(c.Labels[labelPID])
		if err != nil || pid <= 0 || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		if err := pool.Client.RemoveContainer(dc.RemoveContainerOptions{ID: c.ID, Force: true, RemoveVolumes: true}); err == nil {
			logf("itest: removed container %.12s left by dead process %d", c.ID, pid)
		}
	}
}

// dockerWatchdogScript waits for a line or EOF on stdin; unless the line says
// the container was closed, the test binary died (the kernel closed its end
// of the pipe), and it removes the container $1 with the docker command.
const dockerWatchdogScript = `read -r line || :
[ "$line" = closed ] && exit 0
docker rm -f -v "$1" >/dev/null 2>&1
`

// startWatchdog starts the shell that removes the container if this process
// dies without Close. Without the docker command it does nothing: the
// labels let the next test binary remove the container instead.
func (ds *dockerServer) startWatchdog() {
	if _, err := exec.LookPath("docker"); err != nil {
		return
	}
	r, w, err := os.Pipe()
	if err != nil {
		return
	}
	cmd := exec.Command("/bin/sh", "-c", dockerWatchdogScript, "itest-watchdog", ds.res.Container.ID)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return
	}
	ds.watchdog, ds.wdPipe = cmd, w
}
