package lodestar_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
)

// frameEvent is a frame seen by frameProxy on one of its connections.
type frameEvent struct {
	conn  int // in order of acceptance, from 0
	ping  bool
	goway string // GOAWAY's code and debug data
}

// frameProxy forwards plaintext HTTP/2 connections to a server and reports
// what passes: keepalive PINGs from the client (an all-zero payload: grpc
// clients' keepalive; its BDP pings carry another) and GOAWAYs from the
// server.
type frameProxy struct {
	lis    net.Listener
	target string
	events chan frameEvent
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func startFrameProxy(t *testing.T, target string) *frameProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &frameProxy{lis: lis, target: target, events: make(chan frameEvent, 1024)}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		lis.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *frameProxy) Addr() string { return p.lis.Addr().String() }

func (p *frameProxy) accept() {
	defer p.wg.Done()
	for n := 0; ; n++ {
		down, err := p.lis.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, down, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(n, up, down, true)
		go p.pipe(n, down, up, false)
	}
}

// pipe copies src to dst and parses a copy of the frames.
func (p *frameProxy) pipe(n int, dst, src net.Conn, fromClient bool) {
	defer p.wg.Done()
	pr, pw := io.Pipe()
	parsed := make(chan struct{})
	go func() {
		defer close(parsed)
		defer pr.Close()
		if fromClient {
			if _, err := io.ReadFull(pr, make([]byte, len(http2.ClientPreface))); err != nil {
				return
			}
		}
		fr := http2.NewFramer(nil, pr)
		fr.SetMaxReadFrameSize(1 << 24)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				io.Copy(io.Discard, pr)
				return
			}
			var ev frameEvent
			switch f := f.(type) {
			case *http2.PingFrame:
				if !fromClient || f.IsAck() || f.Data != [8]byte{} {
					continue
				}
				ev = frameEvent{conn: n, ping: true}
			case *http2.GoAwayFrame:
				if fromClient {
					continue
				}
				ev = frameEvent{conn: n, goway: f.ErrCode.String() + " " + string(f.DebugData())}
			default:
				continue
			}
			select {
			case p.events <- ev:
			default:
			}
		}
	}()
	io.Copy(dst, io.TeeReader(src, pw))
	pw.Close()
	<-parsed
	dst.Close()
	src.Close()
}

// Dial's default keepalive never trips a grpc-go server's default ping
// enforcement (at most one ping per 5 minutes, none without a call):
// against a plain grpc server registered with etcd's endpoints.Manager,
// with every interval shortened by the same factor (the client pings
// after 10 s, grpc's shortest; the server's minimum scaled alike), two
// lodestar clients, one holding calls open across five pings and one idle
// throughout, see no GOAWAY, no reconnection and no failed call, and the
// idle one is never pinged.
func TestDefaultKeepaliveAgainstPlainServer(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t)
	def := lodestar.DefaultKeepalive()
	const clientTime = 10 * time.Second
	scale := float64(clientTime) / float64(def.Time)
	serverMin := time.Duration(float64(5*time.Minute) * scale) // grpc's default MinTime, scaled
	g := newHoldGreeter()
	srv := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: serverMin}))
	greeterpb.RegisterGreeterServer(srv, g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(lis) }()
	t.Cleanup(func() { g.open(); srv.Stop(); <-served })
	proxy := startFrameProxy(t, lis.Addr().String())

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cli := c.Client(t)
	em, err := endpoints.NewManager(cli, "/services/greeter")
	if err != nil {
		t.Fatal(err)
	}
	if err := em.AddEndpoint(ctx, "/services/greeter/plain", endpoints.Endpoint{Addr: proxy.Addr()}); err != nil {
		t.Fatal(err)
	}
	kp := def
	kp.Time = clientTime
	kp.Timeout = time.Duration(float64(def.Timeout) * scale)
	dialGreeter := func() greeterpb.GreeterClient {
		conn, err := lodestar.Dial(ctx, "greeter", lodestar.WithEtcdEndpoints(c.Endpoints()...), lodestar.WithWaitForReady(), lodestar.WithKeepalive(kp))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return greeterpb.NewGreeterClient(conn)
	}

	idle := dialGreeter() // connection 0
	g.open()
	if _, err := idle.SayHello(ctx, &greeterpb.HelloRequest{Name: "idle"}); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	g.gate = make(chan struct{}) // hold the next calls
	g.mu.Unlock()
	held := dialGreeter() // connection 1
	const calls = 3
	results := make(chan error, calls)
	for range calls {
		go func() {
			_, err := held.SayHello(ctx, &greeterpb.HelloRequest{Name: "held"})
			results <- err
		}()
	}
	g.waitEntered(t, calls+1) // the idle client's call, then the held ones

	pings := map[int]int{}
	for pings[1] < 5 {
		select {
		case ev := <-proxy.events:
			if ev.goway != "" {
				t.Fatalf("the server sent GOAWAY %s on connection %d (pings so far: %v)", ev.goway, ev.conn, pings)
			}
			pings[ev.conn]++
		case err := <-results:
			t.Fatalf("a held call ended early: %v (pings so far: %v)", err, pings)
		case <-ctx.Done():
			t.Fatalf("fewer than 5 keepalive pings during held calls in 3 minutes: %v", pings)
		}
	}
	if pings[0] != 0 {
		t.Errorf("the connection without calls was pinged %d times: a default grpc-go server counts each as an offence", pings[0])
	}
	g.open()
	if _, err := idle.SayHello(ctx, &greeterpb.HelloRequest{Name: "idle again"}); err != nil {
		t.Errorf("a call on the idle client after %d ping intervals: %v", pings[1], err)
	}
	for range calls {
		if err := <-results; err != nil {
			t.Errorf("a call held across %d keepalive pings failed: %v", pings[1], err)
		}
	}
	proxy.mu.Lock()
	n := len(proxy.conns) / 2
	proxy.mu.Unlock()
	if n != 2 {
		t.Errorf("%d connections through the proxy, want 2: a client reconnected", n)
	}
}
