package etcdtest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Proxy is a loopback TCP proxy in front of one address. Point a client at
// Endpoint, then Pause, Resume or Reset the proxy to simulate a network
// partition between that client and etcd, or SetDelay to simulate a slow
// link.
type Proxy struct {
	target func() string // address to dial; "" refuses connections
	ln     net.Listener
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loop and connection handlers

	mu       sync.Mutex
	closed   bool
	paused   bool
	resumed  chan struct{} // closed on Resume; replaced by Pause
	delay    time.Duration // added to every chunk of data, each way
	conns    map[*proxyConn]struct{}
	accepted int // connections accepted so far

	closeOnce sync.Once
}

// proxyConn is one client connection and its upstream connection.
type proxyConn struct {
	client net.Conn
	done   chan struct{} // closed when the pair is torn down

	once   sync.Once
	mu     sync.Mutex
	server net.Conn // nil until dialled
	closed bool
}

// NewProxy starts a proxy listening on 127.0.0.1 (a free port) that forwards
// every connection to target, given as host:port or as a URL such as
// http://127.0.0.1:2379. The proxy is closed at cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	if strings.Contains(target, "://") {
		u, err := url.Parse(target)
		if err != nil {
			t.Fatalf("etcdtest: proxy target: %v", err)
		}
		target = u.Host
	}
	if _, _, err := net.SplitHostPort(target); err != nil {
		t.Fatalf("etcdtest: proxy target %q: %v", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: proxy: %v", err)
	}
	p := newProxy(ln, func() string { return target })
	t.Cleanup(p.Close)
	return p
}

// newProxy starts a proxy accepting on ln and forwarding to target(), which
// is called for each connection.
func newProxy(ln net.Listener, target func() string) *Proxy {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		target:  target,
		ln:      ln,
		ctx:     ctx,
		cancel:  cancel,
		resumed: make(chan struct{}),
		conns:   make(map[*proxyConn]struct{}),
	}
	close(p.resumed)
	p.wg.Add(1)
	go p.acceptLoop()
	return p
}

// Endpoint returns the proxy's address as http://127.0.0.1:port, usable as
// an etcd client endpoint.
func (p *Proxy) Endpoint() string { return "http://" + p.ln.Addr().String() }

// Pause stops forwarding bytes in both directions, on current connections and
// on those accepted while paused (which are not dialled through until
// Resume). Connections stay open and data is held, as in a network partition
// that delays packets instead of dropping them.
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.paused {
		p.paused = true
		p.resumed = make(chan struct{})
	}
}

// Resume forwards bytes again, starting with those held while paused.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused {
		p.paused = false
		close(p.resumed)
	}
}

// SetDelay makes the proxy hold every chunk of data it reads for d before
// forwarding it, in both directions, on current and new connections: a
// round trip through the proxy takes 2*d longer. Order is kept and the
// data already held keeps the delay it was read with; throughput is not
// limited. 0 (the default) forwards at once.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = max(d, 0)
}

func (p *Proxy) currentDelay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay
}

// Reset abruptly closes (with a TCP RST) every current connection, on both
// sides. New connections are accepted as before; Reset does not change
// whether the proxy is paused.
func (p *Proxy) Reset() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for pc := range p.conns {
		conns = append(conns, pc)
	}
	p.mu.Unlock()
	for _, pc := range conns {
		pc.close(true)
	}
}

// Close stops the proxy: it closes the listener and all connections and waits
// for all of the proxy's goroutines to end. It is called at cleanup and may
// be called more than once.
func (p *Proxy) Close() {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.cancel() // wakes paused forwarders and pending dials
		p.ln.Close()
		p.Reset()
		p.wg.Wait()
	})
}

// acceptedConns returns the number of connections accepted so far.
func (p *Proxy) acceptedConns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || p.ctx.Err() != nil {
				return
			}
			// Temporary failure such as EMFILE: back off briefly.
			t := time.NewTimer(10 * time.Millisecond)
			select {
			case <-p.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		pc := &proxyConn{client: c, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.conns[pc] = struct{}{}
		p.accepted++
		// wg.Add while the accept loop still holds its own count, so it
		// cannot race with Close's wg.Wait returning.
		p.wg.Add(1)
		p.mu.Unlock()
		go p.handle(pc)
	}
}

// handle dials the target and forwards in both directions until both
// directions end or the pair is closed.
func (p *Proxy) handle(pc *proxyConn) {
	defer p.wg.Done()
	defer func() {
		pc.close(false)
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	}()

	if !p.waitResumed(pc) {
		return
	}
	target := p.target()
	if target == "" {
		pc.close(true) // like a closed port
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
	var d net.Dialer
	server, err := d.DialContext(ctx, "tcp", target)
	cancel()
	if err != nil {
		pc.close(true)
		return
	}
	if !pc.setServer(server) {
		return
	}

	var wg sync.WaitGroup
	wg.Go(func() { p.forward(pc, server, pc.client) })
	p.forward(pc, pc.client, server)
	wg.Wait()
}

// chunk is data read from one side, to be written to the other at due;
// a chunk with err set ends the direction.
type chunk struct {
	data []byte
	due  time.Time
	err  error
}

// heldChunks bounds the data read ahead of the writer, per direction.
const heldChunks = 64

// forward copies src to dst, each chunk after the proxy's delay, holding
// data while the proxy is paused. At EOF it half-closes dst; on any error
// it tears down the pair. A reader goroutine, which forward waits for,
// reads ahead so that the delay does not limit throughput.
func (p *Proxy) forward(pc *proxyConn, dst, src net.Conn) {
	ch := make(chan chunk, heldChunks)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { p.read(pc, src, ch) })
	for {
		var c chunk
		select {
		case c = <-ch:
		case <-pc.done:
			return
		case <-p.ctx.Done():
			pc.close(false)
			return
		}
		if !p.waitDue(pc, c.due) {
			pc.close(false)
			return
		}
		if len(c.data) > 0 {
			if !p.waitResumed(pc) {
				pc.close(false)
				return
			}
			if _, werr := dst.Write(c.data); werr != nil {
				pc.close(false)
				return
			}
		}
		if c.err != nil {
			if errors.Is(c.err, io.EOF) && p.waitResumed(pc) {
				if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
					return
				}
			}
			pc.close(false)
			return
		}
	}
}

// read reads src into chunks stamped with the time they are due, until
// an error, which it sends last, or until the pair is closed.
func (p *Proxy) read(pc *proxyConn, src net.Conn, ch chan<- chunk) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		c := chunk{due: time.Now().Add(p.currentDelay()), err: err}
		if n > 0 {
			c.data = append([]byte(nil), buf[:n]...)
		}
		select {
		case ch <- c:
		case <-pc.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// waitDue waits until due. It returns false if the connection or the
// proxy was closed meanwhile.
func (p *Proxy) waitDue(pc *proxyConn, due time.Time) bool {
	d := time.Until(due)
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-pc.done:
		return false
	case <-p.ctx.Done():
		return false
	}
}

// waitResumed blocks while the proxy is paused. It returns false if the
// connection or the proxy was closed meanwhile.
func (p *Proxy) waitResumed(pc *proxyConn) bool {
	for {
		p.mu.Lock()
		paused, resumed := p.paused, p.resumed
		p.mu.Unlock()
		if !paused {
			return true
		}
		select {
		case <-resumed:
		case <-pc.done:
			return false
		case <-p.ctx.Done():
			return false
		}
	}
}

// setServer records the upstream connection; it returns false (and closes
// server) if the pair was closed while dialling.
func (pc *proxyConn) setServer(server net.Conn) bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closed {
		server.Close()
		return false
	}
	pc.server = server
	return true
}

// close closes both connections once; abort makes them send a TCP RST
// instead of a FIN.
func (pc *proxyConn) close(abort bool) {
	pc.once.Do(func() {
		pc.mu.Lock()
		pc.closed = true
		server := pc.server
		pc.mu.Unlock()
		close(pc.done)
		for _, c := range []net.Conn{pc.client, server} {
			if c == nil {
				continue
			}
			if tc, ok := c.(*net.TCPConn); ok && abort {
				tc.SetLinger(0)
			}
			c.Close()
		}
	})
}
