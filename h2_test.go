package lodestar_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
)

// h2event is what a raw HTTP/2 connection received, copied out of the
// frame (a framer reuses its frames).
type h2event struct {
	typ      http2.FrameType
	stream   uint32
	code     http2.ErrCode              // RST_STREAM, GOAWAY
	debug    string                     // GOAWAY
	settings map[http2.SettingID]uint32 // SETTINGS (not acks)
}

// h2conn is a plaintext HTTP/2 client speaking frames by hand, to do what
// a grpc client never does: ignore the server's stream limit, or hold a
// connection without calls.
type h2conn struct {
	conn   net.Conn
	events chan h2event // closed when the connection ends
	wmu    sync.Mutex
	fr     *http2.Framer
	done   chan struct{}
}

func dialH2(t *testing.T, addr string) *h2conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h := &h2conn{conn: conn, events: make(chan h2event, 256), fr: http2.NewFramer(conn, conn), done: make(chan struct{})}
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	h.write(func(fr *http2.Framer) error { return fr.WriteSettings() })
	go h.read()
	t.Cleanup(func() { conn.Close(); <-h.done })
	return h
}

func (h *h2conn) write(f func(*http2.Framer) error) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return f(h.fr)
}

// read turns frames into events (dropped when no one reads them) and
// acknowledges the server's settings, until the connection ends.
func (h *h2conn) read() {
	defer close(h.done)
	defer close(h.events)
	rd := http2.NewFramer(nil, h.conn)
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			return
		}
		ev := h2event{typ: f.Header().Type, stream: f.Header().StreamID}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			ev.settings = map[http2.SettingID]uint32{}
			f.ForeachSetting(func(s http2.Setting) error { ev.settings[s.ID] = s.Val; return nil })
			h.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
		case *http2.RSTStreamFrame:
			ev.code = f.ErrCode
		case *http2.GoAwayFrame:
			ev.code, ev.debug = f.ErrCode, string(f.DebugData())
		}
		select {
		case h.events <- ev:
		default:
		}
	}
}

// call starts a gRPC call of method on stream id, with an empty request.
func (h *h2conn) call(id uint32, method string) error {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", method}, {":authority", "lodestar"},
		{"content-type", "application/grpc"}, {"te", "trailers"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return h.write(func(fr *http2.Framer) error {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
			return err
		}
		return fr.WriteData(id, true, []byte{0, 0, 0, 0, 0}) // one uncompressed empty message
	})
}

// next returns the next event that match accepts, or an error when the
// connection ended first or ctx did.
func (h *h2conn) next(ctx context.Context, match func(h2event) bool) (h2event, error) {
	for {
		select {
		case ev, ok := <-h.events:
			if !ok {
				return h2event{}, errors.New("connection closed")
			}
			if match(ev) {
				return ev, nil
			}
		case <-ctx.Done():
			return h2event{}, ctx.Err()
		}
	}
}

// holdGreeter holds every SayHello until its gate opens or the call ends,
// and counts the calls in its handler.
type holdGreeter struct {
	greeterpb.UnimplementedGreeterServer
	entered chan struct{} // one send per call entering, if there is room
	left    chan struct{} // one send per call leaving, if there is room
	mu      sync.Mutex
	gate    chan struct{}
	work    time.Duration // each call's time in the handler once let through (benchmarks)
	cur     atomic.Int64
	max     atomic.Int64
}

func newHoldGreeter() *holdGreeter {
	return &holdGreeter{entered: make(chan struct{}, 1024), left: make(chan struct{}, 1024), gate: make(chan struct{})}
}

func (g *holdGreeter) SayHello(ctx context.Context, r *greeterpb.HelloRequest) (*greeterpb.HelloResponse, error) {
	n := g.cur.Add(1)
	defer func() {
		g.cur.Add(-1)
		select {
		case g.left <- struct{}{}:
		default:
		}
	}()
	for m := g.max.Load(); n > m && !g.max.CompareAndSwap(m, n); m = g.max.Load() {
	}
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-gate:
		if g.work > 0 {
			t := time.NewTimer(g.work)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return &greeterpb.HelloResponse{Message: "Hello " + r.Name}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// open lets the held calls go, and the next ones through.
func (g *holdGreeter) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.gate:
	default:
		close(g.gate)
	}
}

// waitEntered waits until n more calls entered the handler.
func (g *holdGreeter) waitEntered(t testing.TB, n int) {
	t.Helper()
	waitN(t, g.entered, n, "reached the handler", &g.cur)
}

// waitLeft waits until n more calls left the handler.
func (g *holdGreeter) waitLeft(t testing.TB, n int) {
	t.Helper()
	waitN(t, g.left, n, "left the handler", &g.cur)
}

func waitN(t testing.TB, ch <-chan struct{}, n int, what string, cur *atomic.Int64) {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for range n {
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("fewer than %d calls %s in 30 s (now in the handler: %d)", n, what, cur.Load())
		}
	}
}

// startGreeter starts a lodestar server of the service "greeter" with g
// (plaintext unless opts say otherwise) and returns it once it is ready.
func startGreeter(t testing.TB, endpoints []string, g greeterpb.GreeterServer, opts ...lodestar.Option) *lodestar.Server {
	t.Helper()
	opts = append([]lodestar.Option{lodestar.WithEtcdEndpoints(endpoints...), lodestar.WithTTL(2 * time.Second)}, opts...)
	srv, err := lodestar.NewServer("greeter", opts...)
	if err != nil {
		t.Fatal(err)
	}
	greeterpb.RegisterGreeterServer(srv, g)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-srv.Ready():
	case err := <-done:
		done <- err
		t.Fatalf("serve: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server not ready")
	}
	return srv
}
