package advisory_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/soak"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
)

func TestElectBadArgs(t *testing.T) {
	k := testKey(t)
	if _, err := advisory.NewElector(nil, k, func(context.Context, int64) error { return nil }); !errors.Is(err, advisory.ErrBadElector) {
		t.Errorf("nil db: %v", err)
	}
	if _, err := advisory.NewElector(&sql.DB{}, k, nil); !errors.Is(err, advisory.ErrBadElector) {
		t.Errorf("nil OnElected: %v", err)
	}
}

// elected is one OnElected call as a test candidate saw it.
type elected struct {
	cand int
	term int64
	pid  int
	at   time.Time
}

// candidates runs electors of one key in pools of their own and records
// every term as a soak section.
type candidates struct {
	t       *testing.T
	key     string
	els     []*advisory.Elector
	rec     soak.Recorder
	events  chan elected
	mu      sync.Mutex
	cancels []context.CancelFunc
	done    []chan error
	enter   map[int64]elected
	lostAt  map[int64]time.Time
	causes  map[int64]error
	wg      sync.WaitGroup
}

func newCandidates(t *testing.T, n int, open func() *sql.DB, ka time.Duration) *candidates {
	t.Helper()
	c := &candidates{t: t, key: "election", events: make(chan elected, 64),
		enter: map[int64]elected{}, lostAt: map[int64]time.Time{}, causes: map[int64]error{}}
	key := testKey(t)
	for i := range n {
		i := i
		el, err := advisory.NewElector(open(), key, func(ctx context.Context, term int64) error {
			ls, _ := advisory.LeaseFromContext(ctx)
			ev := elected{cand: i, term: term, pid: ls.PID(), at: time.Now()}
			c.mu.Lock()
			c.enter[term] = ev
			c.mu.Unlock()
			c.events <- ev
			<-ctx.Done()
			c.mu.Lock()
			c.causes[term] = context.Cause(ctx)
			if errors.Is(context.Cause(ctx), advisory.ErrLockLost) {
				c.lostAt[term] = time.Now()
			}
			c.mu.Unlock()
			return nil
		},
			advisory.ElectAs("cand-"+strconv.Itoa(i)),
			advisory.ElectBackoff(50*time.Millisecond, time.Second),
			advisory.ElectDeadPeer(3*time.Second),
			advisory.ElectLocker(advisory.WithKeepAlive(ka)),
			advisory.ElectOnEnd(func(term int64, err error) {
				c.mu.Lock()
				ev := c.enter[term]
				s := soak.Section{Holder: "cand-" + strconv.Itoa(ev.cand), Key: c.key, Enter: ev.at, Exit: time.Now(),
					LostAt: c.lostAt[term], PID: ev.pid, Outcome: soak.Confirmed}
				c.mu.Unlock()
				if err != nil {
					s.Outcome = soak.Lost
					if s.LostAt.IsZero() {
						s.LostAt = s.Exit
					}
				}
				c.rec.Add(s)
			}))
		if err != nil {
			t.Fatal(err)
		}
		c.els = append(c.els, el)
		c.cancels = append(c.cancels, nil)
		c.done = append(c.done, nil)
		c.start(i)
	}
	t.Cleanup(c.stopAll)
	return c
}

// start runs candidate i's Elector until stop(i).
func (c *candidates) start(i int) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	c.mu.Lock()
	c.cancels[i], c.done[i] = cancel, done
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		done <- c.els[i].Run(ctx)
	}()
}

// stop ends candidate i's Run and waits for it.
func (c *candidates) stop(i int) error {
	c.mu.Lock()
	cancel, done := c.cancels[i], c.done[i]
	c.mu.Unlock()
	cancel()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		c.t.Fatalf("candidate %d: Run did not return", i)
		return nil
	}
}

func (c *candidates) stopAll() {
	for i := range c.els {
		c.mu.Lock()
		cancel := c.cancels[i]
		c.mu.Unlock()
		cancel()
	}
	c.wg.Wait()
}

// next waits for the next OnElected.
func (c *candidates) next(d time.Duration) elected {
	c.t.Helper()
	select {
	case ev := <-c.events:
		return ev
	case <-time.After(d):
		c.t.Fatalf("no leader elected within %v", d)
		return elected{}
	}
}

// waitEnd waits until the term's OnElected has seen its context end, and
// returns the cause.
func (c *candidates) waitEnd(term int64, d time.Duration) error {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		c.mu.Lock()
		err, ok := c.causes[term]
		c.mu.Unlock()
		if ok {
			return err
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("term %d: OnElected's context not cancelled within %v", term, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestElectResignAndKill(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		e := setup(t, driver)
		ctx := timeout(t, time.Minute)
		if err := advisory.CreateFenceTable(ctx, e.admin, ""); err != nil {
			t.Fatal(err)
		}
		c := newCandidates(t, 3, func() *sql.DB { return itest.OpenDSN(t, driver, e.dsn) }, 100*time.Millisecond)
		first := c.next(10 * time.Second)
		ld, err := advisory.CurrentLeader(ctx, e.admin, c.els[0].Key())
		if err != nil {
			t.Fatal(err)
		}
		if ld.Term != first.term || ld.PID != first.pid || ld.Identity != "cand-"+strconv.Itoa(first.cand) {
			t.Fatalf("CurrentLeader %v, want cand-%d term %d pid %d", ld, first.cand, first.term, first.pid)
		}
		if term, ok := c.els[first.cand].Term(); !ok || term != first.term {
			t.Fatalf("Term() = %d, %v", term, ok)
		}
		watch := advisory.WatchLeader(ctx, e.admin, c.els[0].Key(), 50*time.Millisecond)
		if w := <-watch; w.Term != first.term {
			t.Fatalf("WatchLeader first: %v", w)
		}

		// Resign: another candidate leads with a higher term.
		if err := c.els[first.cand].Resign(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.waitEnd(first.term, 5*time.Second); !errors.Is(err, advisory.ErrResigned) {
			t.Fatalf("cause after Resign: %v", err)
		}
		second := c.next(10 * time.Second)
		if second.term <= first.term {
			t.Fatalf("term %d after term %d", second.term, first.term)
		}
		for w := range watch {
			if w.Term == second.term {
				break
			}
		}

		// Kill the leader's backend: deposed with ErrLockLost, and another leads.
		e.terminate(t, second.pid)
		third := c.next(10 * time.Second)
		if err := c.waitEnd(second.term, 5*time.Second); !errors.Is(err, advisory.ErrLockLost) {
			t.Fatalf("cause after a kill: %v", err)
		}
		if third.term <= second.term {
			t.Fatalf("term %d after term %d", third.term, second.term)
		}
		c.stopAll()
		// A candidate stopped as it was granted discards its session; the
		// server ends it a moment later.
		waitFor(t, 10*time.Second, "no leader after all stopped", func() bool {
			_, err := advisory.CurrentLeader(ctx, e.admin, c.els[0].Key())
			return errors.Is(err, advisory.ErrNoLeader)
		})
		if rep := soak.Check(c.rec.Sections()); len(rep.Violations) > 0 {
			t.Fatal(rep)
		}
	})
}

// TestElectFailovers is the acceptance test of leader election: 5
// candidates in pools of their own on a private server; failovers caused by
// killing the leader's backend, the leader's context ending, server restarts
// and (with PGADVISORY_ELECT_PARTITION=1, as root with iptables) a real
// partition of the leader's session. No two confirmed terms overlap, terms
// strictly increase, every deposed leader's context is cancelled, and a
// kill's failover takes less than the keepalive interval plus 1 s.
// PGADVISORY_ELECT_FAILOVERS sets the number of failovers (default 8; 200
// for the acceptance run).
func TestElectFailovers(t *testing.T) {
	failovers := envInt(t, "PGADVISORY_ELECT_FAILOVERS", 8)
	partition := os.Getenv("PGADVISORY_ELECT_PARTITION") == "1"
	if partition {
		if os.Geteuid() != 0 {
			t.Fatal("PGADVISORY_ELECT_PARTITION=1 needs root (iptables)")
		}
		if _, err := exec.LookPath("iptables"); err != nil {
			t.Fatal("PGADVISORY_ELECT_PARTITION=1 needs iptables")
		}
	} else {
		t.Log("partitions skipped: set PGADVISORY_ELECT_PARTITION=1 (root, iptables) to include them")
	}
	t.Cleanup(func() { testkit.VerifyNone(t) })
	srv := itest.NewServer(t, itest.Config{Mode: itest.ModeLocal})
	itest.EachDriver(t, func(t *testing.T, driver string) {
		dsn := srv.NewDatabase(t)
		admin := itest.OpenDSN(t, "postgres", dsn)
		ctx := timeout(t, 30*time.Minute)
		if err := advisory.CreateFenceTable(ctx, admin, ""); err != nil {
			t.Fatal(err)
		}
		const ka = 200 * time.Millisecond
		c := newCandidates(t, 5, func() *sql.DB { return itest.OpenDSN(t, driver, dsn) }, ka)

		kinds := []string{"kill", "kill", "ctx", "kill"}
		if partition {
			kinds = append(kinds, "partition")
		}
		restarts := map[int]bool{failovers / 2: true}
		for i := 25; i < failovers; i += 50 {
			restarts[i] = true
		}
		lat := map[string][]time.Duration{}
		cur := c.next(30 * time.Second)
		for i := range failovers {
			kind := kinds[i%len(kinds)]
			if restarts[i] {
				kind = "restart"
			}
			var undo func()
			fault := time.Now()
			switch kind {
			case "kill":
				var ok bool
				if err := admin.QueryRowContext(ctx, "SELECT pg_terminate_backend($1)", cur.pid).Scan(&ok); err != nil || !ok {
					t.Fatalf("terminate %d: %v %v", cur.pid, ok, err)
				}
			case "ctx":
				go func(i int) { _ = c.stop(i); c.start(i) }(cur.cand)
			case "restart":
				if err := srv.Restart(ctx); err != nil {
					t.Fatal(err)
				}
			case "partition":
				undo = partitionSession(t, admin, srv.Addr(), cur.pid)
				fault = time.Now()
			}
			next := c.next(60 * time.Second)
			took := next.at.Sub(fault)
			if undo != nil {
				undo()
			}
			if next.term <= cur.term {
				t.Fatalf("failover %d (%s): term %d after term %d", i, kind, next.term, cur.term)
			}
			cause := c.waitEnd(cur.term, 30*time.Second)
			switch kind {
			case "ctx":
				if !errors.Is(cause, context.Canceled) {
					t.Fatalf("failover %d (ctx): deposed leader's cause %v", i, cause)
				}
			default:
				if !errors.Is(cause, advisory.ErrLockLost) {
					t.Fatalf("failover %d (%s): deposed leader's cause %v", i, kind, cause)
				}
			}
			if kind == "kill" && took > ka+time.Second {
				t.Errorf("failover %d (kill): next leader after %v, want within %v", i, took, ka+time.Second)
			}
			lat[kind] = append(lat[kind], took)
			cur = next
		}
		c.stopAll()

		rep := soak.Check(c.rec.Sections())
		t.Logf("%s: %d failovers; %v", driver, failovers, rep)
		if len(rep.Violations) > 0 {
			t.Fatal("two leaders with overlapping confirmed terms")
		}
		secs := c.rec.Sections()
		slices.SortFunc(secs, func(a, b soak.Section) int { return a.Enter.Compare(b.Enter) })
		var terms []int64
		c.mu.Lock()
		for term := range c.enter {
			terms = append(terms, term)
		}
		byEnter := make([]elected, 0, len(c.enter))
		for _, ev := range c.enter {
			byEnter = append(byEnter, ev)
		}
		c.mu.Unlock()
		slices.SortFunc(byEnter, func(a, b elected) int { return a.at.Compare(b.at) })
		for j := 1; j < len(byEnter); j++ {
			if byEnter[j].term <= byEnter[j-1].term {
				t.Fatalf("term %d elected after term %d", byEnter[j].term, byEnter[j-1].term)
			}
		}
		for _, k := range []string{"kill", "ctx", "restart", "partition"} {
			if d := lat[k]; len(d) > 0 {
				slices.Sort(d)
				t.Logf("%s: fault to next OnElected, %-9s n=%3d min %v median %v max %v", driver, k, len(d),
					d[0].Round(time.Millisecond), d[len(d)/2].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
			}
		}
		_ = terms
		testkit.WaitNoAdvisoryLocks(t, admin)
	})
}

// partitionSession drops every packet of backend pid's connection (both
// directions, by the client's port) and returns the function that removes
// the rules; they are also removed on cleanup.
func partitionSession(t *testing.T, admin *sql.DB, serverAddr string, pid int) func() {
	t.Helper()
	var port int
	if err := admin.QueryRow("SELECT client_port FROM pg_stat_activity WHERE pid = $1", pid).Scan(&port); err != nil || port <= 0 {
		t.Fatalf("client port of %d: %d %v", pid, port, err)
	}
	sport := serverAddr[strings.LastIndexByte(serverAddr, ':')+1:]
	rules := [][]string{
		{"INPUT", "-p", "tcp", "--sport", strconv.Itoa(port), "--dport", sport, "-j", "DROP"},
		{"INPUT", "-p", "tcp", "--sport", sport, "--dport", strconv.Itoa(port), "-j", "DROP"},
	}
	for _, r := range rules {
		if out, err := exec.Command("iptables", append([]string{"-I"}, r...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables -I %v: %v %s", r, err, out)
		}
	}
	var once sync.Once
	undo := func() {
		once.Do(func() {
			for _, r := range rules {
				if out, err := exec.Command("iptables", append([]string{"-D"}, r...)...).CombinedOutput(); err != nil {
					t.Errorf("iptables -D %v: %v %s", r, err, out)
				}
			}
		})
	}
	t.Cleanup(undo)
	return undo
}

var _ = fmt.Sprint
