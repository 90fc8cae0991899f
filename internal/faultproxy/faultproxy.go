// Package faultproxy is a TCP proxy for tests that stands between a client
// and PostgreSQL and misbehaves on demand: it adds latency, silently stops
// forwarding (a network partition), cuts every connection, or refuses new
// ones. It listens on 127.0.0.1 only.
//
// A Proxy starts in forwarding mode. Its mode can be switched at any moment
// from any goroutine, and the switch applies at once to every connection,
// open or future:
//
//	p, err := faultproxy.New(srv.Addr())
//	...
//	defer p.Close()
//	db, _ := sql.Open("pgx", srv.DSNAt(p.Addr(), "mydb"))
//	p.Blackhole() // the client now hangs with no error, as in a partition
//	p.Forward()   // healed: what was held back is delivered, as TCP would
//	p.Cut()       // every open connection is reset; new ones still work
package faultproxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// mode is what the proxy does with the bytes it reads.
type mode int

const (
	modeForward mode = iota
	modeDelay
	modeBlackhole
)

func (m mode) String() string {
	switch m {
	case modeDelay:
		return "delay"
	case modeBlackhole:
		return "blackhole"
	}
	return "forward"
}

// chunkSize is the most a pump reads before it forwards: one "chunk" in the
// sense of Delay.
const chunkSize = 32 << 10

// dialTimeout bounds the connection to the target.
const dialTimeout = 10 * time.Second

// Stats are the proxy's counters since New.
type Stats struct {
	Accepted int64 // client connections accepted and forwarded (or held)
	Refused  int64 // client connections refused while Refuse(true) was in force
	Cut      int64 // connections closed by Cut
	Failed   int64 // client connections dropped because the target could not be reached
	Active   int   // connections open now
}

// Proxy forwards TCP connections from Addr to a target address and injects
// faults on request. All methods are safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener

	mu      sync.Mutex
	mode    mode
	delay   time.Duration
	refuse  bool
	closed  bool
	changed chan struct{} // closed and replaced on every change of mode
	links   map[*link]struct{}

	wg sync.WaitGroup // the accept loop and every connection's goroutines

	accepted, refused, cut, failed atomic.Int64
}

// New starts a proxy on a free port of 127.0.0.1 that forwards to target
// (host:port). The caller must Close it.
func New(target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("faultproxy: bad target %q: %w", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{
		target:  target,
		ln:      ln,
		changed: make(chan struct{}),
		links:   make(map[*link]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the host:port clients connect to (always on 127.0.0.1).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// setMode switches the mode and wakes every pump waiting on the old one.
func (p *Proxy) setMode(m mode, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.delay = m, d
	close(p.changed)
	p.changed = make(chan struct{})
}

// current returns the mode in force and the channel closed when it changes.
func (p *Proxy) current() (mode, time.Duration, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay, p.changed
}

// Forward makes the proxy forward every byte at once (the default). Data held
// back by Blackhole is delivered, in order, as TCP retransmission would after
// a partition heals.
func (p *Proxy) Forward() { p.setMode(modeForward, 0) }

// Delay makes the proxy hold every chunk it reads, in both directions, for d
// before forwarding it. A request and its answer are each delayed, so a round
// trip takes at least 2*d longer. Delay(0) is Forward.
func (p *Proxy) Delay(d time.Duration) {
	if d <= 0 {
		p.Forward()
		return
	}
	p.setMode(modeDelay, d)
}

// Blackhole stops all forwarding, in both directions, without closing
// anything: connections stay open and writes succeed into buffers, but
// nothing arrives, so the client hangs with no error, as behind a network
// partition. New connections are accepted but not connected to the target
// until the mode changes. Forward (or Delay) heals it; Cut or Close ends it.
func (p *Proxy) Blackhole() { p.setMode(modeBlackhole, 0) }

// Mode reports the mode in force: "forward", "delay" or "blackhole".
func (p *Proxy) Mode() string {
	m, _, _ := p.current()
	return m.String()
}

// Cut closes every open connection abruptly (a TCP reset on both sides) and
// keeps listening: new connections are served in the mode in force. It
// returns how many connections it cut.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close(true)
	}
	p.cut.Add(int64(len(links)))
	return len(links)
}

// Refuse makes the proxy reset every new connection as soon as it is accepted
// (on) or serve new connections again (off). Open connections are not
// affected.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = on
}

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	active := len(p.links)
	p.mu.Unlock()
	return Stats{
		Accepted: p.accepted.Load(),
		Refused:  p.refused.Load(),
		Cut:      p.cut.Load(),
		Failed:   p.failed.Load(),
		Active:   active,
	}
}

// Close stops listening, resets every connection and waits until every
// goroutine of the proxy has returned. It is safe to call more than once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	// Wake pumps held in Blackhole or Delay.
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	err := p.ln.Close()
	for _, l := range links {
		l.close(true)
	}
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient accept error (e.g. too many files): keep serving
			// unless the proxy was closed meanwhile.
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return
			}
			continue
		}
		p.mu.Lock()
		if p.closed || p.refuse {
			closed := p.closed
			p.mu.Unlock()
			if !closed {
				p.refused.Add(1)
			}
			reset(c)
			continue
		}
		l := &link{client: c, done: make(chan struct{})}
		p.links[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		p.accepted.Add(1)
		go p.serve(l)
	}
}

// serve connects l to the target (once the proxy is not blackholed) and
// pumps both directions until either side ends.
func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer func() {
		l.close(false)
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	// In a partition the target is unreachable: do not even dial it until
	// the partition heals (or the link is cut).
	for {
		m, _, changed := p.current()
		if m != modeBlackhole {
			break
		}
		select {
		case <-changed:
		case <-l.done:
			return
		}
	}
	var d net.Dialer
	d.Timeout = dialTimeout
	s, err := d.Dial("tcp", p.target)
	if err != nil {
		p.failed.Add(1)
		return
	}
	if !l.setServer(s) {
		return // cut while dialling
	}
	var pumps sync.WaitGroup
	pumps.Add(2)
	go func() { defer pumps.Done(); p.pump(l, s, l.client) }()
	go func() { defer pumps.Done(); p.pump(l, l.client, s) }()
	pumps.Wait()
}

// pump copies src to dst chunk by chunk, obeying the mode in force before
// each write. When either end fails it closes the whole link.
func (p *Proxy) pump(l *link, dst, src net.Conn) {
	defer l.close(false)
	buf := make([]byte, chunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.hold(l) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			// io.EOF or a reset: either way the conversation is over.
			return
		}
	}
}

// hold waits as the mode says before a chunk is forwarded: not at all in
// forward mode, the delay in delay mode, until the mode changes in blackhole
// mode. It reports false if the link was closed meanwhile.
func (p *Proxy) hold(l *link) bool {
	for {
		m, d, changed := p.current()
		switch m {
		case modeForward:
			select {
			case <-l.done:
				return false
			default:
				return true
			}
		case modeDelay:
			t := time.NewTimer(d)
			select {
			case <-t.C:
				return true
			case <-l.done:
				t.Stop()
				return false
			}
		default: // blackhole
			select {
			case <-changed:
			case <-l.done:
				return false
			}
		}
	}
}

// link is one proxied connection: the client side and, once dialled, the
// server side.
type link struct {
	client net.Conn

	mu     sync.Mutex
	server net.Conn
	closed bool
	done   chan struct{}
}

// setServer records the dialled server side; it reports false (and closes s)
// if the link was closed meanwhile.
func (l *link) setServer(s net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		reset(s)
		return false
	}
	l.server = s
	return true
}

// close ends both sides, with a reset when abrupt. It is idempotent.
func (l *link) close(abrupt bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	close(l.done)
	for _, c := range []net.Conn{l.client, l.server} {
		if c == nil {
			continue
		}
		if abrupt {
			reset(c)
		} else {
			_ = c.Close()
		}
	}
}

// reset closes c with SO_LINGER 0, so the peer gets a TCP reset instead of an
// orderly end of stream.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
