package faultproxy_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/faultproxy"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// newProxy starts a proxy to the shared server, closed on cleanup.
func newProxy(t *testing.T) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(itest.Shared(t).Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close proxy: %v", err)
		}
	})
	return p
}

// openVia opens a fresh database through p with driver. It returns the
// pool through the proxy and a direct pool to the same database, for checks
// that must not depend on the proxy. Both are closed on cleanup, before the
// proxy.
func openVia(t *testing.T, driver string, p *faultproxy.Proxy) (via, direct *sql.DB) {
	t.Helper()
	dsn := itest.DSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	direct = itest.OpenDSN(t, "postgres", dsn)
	via = itest.OpenDSN(t, driver, itest.Shared(t).DSNAt(p.Addr(), name))
	t.Cleanup(func() {
		testkit.WaitConnsIdle(t, via)
		testkit.WaitNoAdvisoryLocks(t, direct)
	})
	return via, direct
}

func queryInt(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, n int) (int, error) {
	var got int
	err := q.QueryRowContext(ctx, "SELECT $1::int", n).Scan(&got)
	return got, err
}

func TestForward(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		p := newProxy(t)
		db, _ := openVia(t, driver, p)
		got, err := queryInt(context.Background(), db, 7)
		if err != nil || got != 7 {
			t.Fatalf("query through proxy: %d, %v", got, err)
		}
		if s := p.Stats(); s.Accepted < 1 || s.Active < 1 {
			t.Fatalf("stats after a query: %+v", s)
		}
		if p.Mode() != "forward" {
			t.Fatalf("mode %q, want forward", p.Mode())
		}
	})
}

func TestDelay(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		p := newProxy(t)
		db, _ := openVia(t, driver, p)
		db.SetMaxOpenConns(1)
		ctx := context.Background()
		if _, err := queryInt(ctx, db, 1); err != nil { // warm the connection up
			t.Fatal(err)
		}
		const d = 100 * time.Millisecond
		p.Delay(d)
		start := time.Now()
		if _, err := queryInt(ctx, db, 2); err != nil {
			t.Fatal(err)
		}
		delayed := time.Since(start)
		p.Forward()
		start = time.Now()
		if _, err := queryInt(ctx, db, 3); err != nil {
			t.Fatal(err)
		}
		plain := time.Since(start)
		t.Logf("round trip with Delay(%v): %v; after Forward: %v", d, delayed, plain)
		if delayed < 2*d {
			t.Fatalf("round trip took %v with Delay(%v), want at least %v", delayed, d, 2*d)
		}
	})
}

func TestBlackholeThenHeal(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		p := newProxy(t)
		db, _ := openVia(t, driver, p)
		db.SetMaxOpenConns(1)
		if _, err := queryInt(context.Background(), db, 1); err != nil {
			t.Fatal(err)
		}
		p.Blackhole()
		type result struct {
			n   int
			err error
		}
		done := make(chan result, 1)
		go func() {
			n, err := queryInt(context.Background(), db, 42)
			done <- result{n, err}
		}()
		// A partition gives no error: nothing may come back while it lasts.
		select {
		case r := <-done:
			t.Fatalf("query answered through a blackhole: %d, %v", r.n, r.err)
		case <-time.After(300 * time.Millisecond):
		}
		if s := p.Stats(); s.Active != 1 {
			t.Fatalf("blackhole closed connections: %+v", s)
		}
		p.Forward()
		select {
		case r := <-done:
			if r.err != nil || r.n != 42 {
				t.Fatalf("after healing: %d, %v; want 42", r.n, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("query still hanging 10 s after the partition healed")
		}
	})
}

// TestBlackholeContext records what each driver does when the context of a
// query behind a partition ends: pgx sets a deadline on the socket and
// returns; lib/pq sends a cancel request over a new connection, which the
// partition swallows too, so the query stays blocked until the connection
// dies. Code that must notice a partition (the lease keepalive) cannot rely
// on the context alone to get its goroutine back.
func TestBlackholeContext(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		p := newProxy(t)
		db, _ := openVia(t, driver, p)
		db.SetMaxOpenConns(1)
		if _, err := queryInt(context.Background(), db, 1); err != nil {
			t.Fatal(err)
		}
		p.Blackhole()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := queryInt(ctx, db, 5)
			done <- err
		}()
		select {
		case err := <-done:
			t.Logf("%s: query behind a blackhole returned after %v: %v", driver, time.Since(start).Round(time.Millisecond), err)
			if err == nil {
				t.Fatal("query succeeded through a blackhole")
			}
		case <-time.After(2 * time.Second):
			t.Logf("%s: query behind a blackhole still blocked %v after its context ended", driver, time.Since(start).Round(time.Millisecond))
			if n := p.Cut(); n < 1 {
				t.Fatalf("Cut closed %d connections, want at least 1", n)
			}
			select {
			case err := <-done:
				t.Logf("%s: after Cut: %v", driver, err)
				if err == nil {
					t.Fatal("query succeeded after Cut")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("query still blocked 10 s after Cut")
			}
		}
		p.Forward()
		if _, err := queryInt(context.Background(), db, 6); err != nil {
			t.Fatalf("pool unusable after the partition: %v", err)
		}
	})
}

func TestCut(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		p := newProxy(t)
		db, _ := openVia(t, driver, p)
		ctx := context.Background()
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := queryInt(ctx, conn, 1); err != nil {
			t.Fatal(err)
		}
		if n := p.Cut(); n < 1 {
			t.Fatalf("Cut closed %d connections, want at least 1", n)
		}
		if _, err := queryInt(ctx, conn, 2); err == nil {
			t.Fatal("query on a cut connection succeeded")
		} else {
			t.Logf("%s: query on a cut connection: %v", driver, err)
		}
		conn.Close()
		// The proxy still listens: the pool dials again.
		if got, err := queryInt(ctx, db, 3); err != nil || got != 3 {
			t.Fatalf("query after Cut: %d, %v", got, err)
		}
		if s := p.Stats(); s.Cut < 1 || s.Accepted < 2 {
			t.Fatalf("stats after Cut: %+v", s)
		}
	})
}

func TestRefuse(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		p := newProxy(t)
		db, _ := openVia(t, driver, p)
		ctx := context.Background()
		db.SetMaxIdleConns(0) // every query dials
		p.Refuse(true)
		ctx1, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := db.PingContext(ctx1); err == nil {
			t.Fatal("ping through a refusing proxy succeeded")
		} else {
			t.Logf("%s: refused: %v", driver, err)
		}
		if s := p.Stats(); s.Refused < 1 {
			t.Fatalf("stats while refusing: %+v", s)
		}
		p.Refuse(false)
		if got, err := queryInt(ctx, db, 4); err != nil || got != 4 {
			t.Fatalf("query after Refuse(false): %d, %v", got, err)
		}
	})
}

func TestCloseEndsHeldConnections(t *testing.T) {
	itest.EachDriver(t, func(t *testing.T, driver string) {
		p := newProxy(t)
		db, _ := openVia(t, driver, p)
		db.SetMaxOpenConns(1)
		if _, err := queryInt(context.Background(), db, 1); err != nil {
			t.Fatal(err)
		}
		p.Blackhole()
		done := make(chan error, 1)
		go func() {
			_, err := queryInt(context.Background(), db, 2)
			done <- err
		}()
		// Wait until the query's bytes sit in the proxy.
		select {
		case err := <-done:
			t.Fatalf("query answered through a blackhole: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		start := time.Now()
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil { // idempotent
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("query succeeded through a closed proxy")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("query still blocked 10 s after Close")
		}
		t.Logf("%s: Close with a held connection took %v", driver, time.Since(start).Round(time.Millisecond))
		if s := p.Stats(); s.Active != 0 {
			t.Fatalf("connections left after Close: %+v", s)
		}
	})
}

// echoServer is a line echo server on 127.0.0.1 for tests that need no
// PostgreSQL.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	conns := make(chan net.Conn, 64)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(conns)
		for c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestModesEcho runs every mode against an echo server: fast, and needs no
// PostgreSQL.
func TestModesEcho(t *testing.T) {
	p, err := faultproxy.New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip := func(msg string) (string, error) {
		if _, err := io.WriteString(c, msg+"\n"); err != nil {
			return "", err
		}
		line, err := r.ReadString('\n')
		return strings.TrimSuffix(line, "\n"), err
	}
	if got, err := roundTrip("a"); err != nil || got != "a" {
		t.Fatalf("forward: %q, %v", got, err)
	}
	p.Delay(50 * time.Millisecond)
	start := time.Now()
	if got, err := roundTrip("b"); err != nil || got != "b" {
		t.Fatalf("delay: %q, %v", got, err)
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("delayed echo took %v, want at least 100ms", el)
	}
	p.Blackhole()
	if _, err := io.WriteString(c, "c\n"); err != nil {
		t.Fatalf("write into a blackhole must succeed: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := r.ReadString('\n'); !isTimeout(err) {
		t.Fatalf("read behind a blackhole: %v, want a timeout", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	p.Forward()
	if line, err := r.ReadString('\n'); err != nil || line != "c\n" {
		t.Fatalf("after healing: %q, %v", line, err)
	}
	if n := p.Cut(); n != 1 {
		t.Fatalf("Cut: %d, want 1", n)
	}
	if _, err := roundTrip("d"); err == nil {
		t.Fatal("round trip on a cut connection succeeded")
	}
	p.Refuse(true)
	c2, err := net.Dial("tcp", p.Addr())
	if err == nil {
		_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c2.Read(make([]byte, 1))
		c2.Close()
	}
	if err == nil {
		t.Fatal("refused connection was served")
	}
	p.Refuse(false)
	s := p.Stats()
	if s.Accepted != 1 || s.Refused != 1 || s.Cut != 1 {
		t.Fatalf("stats: %+v", s)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", p.Addr()); err == nil {
		t.Fatal("dial after Close succeeded")
	}
}

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestNewBadTarget(t *testing.T) {
	if _, err := faultproxy.New("no-port"); err == nil || !strings.HasPrefix(err.Error(), "faultproxy: ") {
		t.Fatalf("New(bad target): %v", err)
	}
}
