package lodestar_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
)

const sayHello = "/lodestar.examples.greeter.Greeter/SayHello"

// settingsOf returns the first SETTINGS a server sends.
func settingsOf(t *testing.T, h *h2conn) map[http2.SettingID]uint32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ev, err := h.next(ctx, func(ev h2event) bool { return ev.typ == http2.FrameSettings })
	if err != nil {
		t.Fatalf("no SETTINGS from the server: %v", err)
	}
	return ev.settings
}

// A server tells clients it runs at most DefaultMaxConcurrentStreams
// calls per connection (grpc's own default is no limit).
func TestServerLimitsStreamsByDefault(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t)
	g := newHoldGreeter()
	srv := startGreeter(t, c.Endpoints(), g)
	h := dialH2(t, srv.Addr())
	if got, ok := settingsOf(t, h)[http2.SettingMaxConcurrentStreams]; !ok || got != lodestar.DefaultMaxConcurrentStreams {
		t.Errorf("server advertises max concurrent streams %d (set: %v), want %d", got, ok, lodestar.DefaultMaxConcurrentStreams)
	}
}

// With a limit of 4 set through WithServerOptions (which must win over
// the default): a client that ignores the limit has its fifth stream
// refused while 4 calls run, and no fifth handler starts; a grpc client's
// calls beyond 4 wait, and all of them succeed, never more than 4 at once.
func TestStreamsBeyondTheLimitWait(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t)
	g := newHoldGreeter()
	srv := startGreeter(t, c.Endpoints(), g, lodestar.WithServerOptions(grpc.MaxConcurrentStreams(4)))
	defer g.open()

	h := dialH2(t, srv.Addr())
	if got := settingsOf(t, h)[http2.SettingMaxConcurrentStreams]; got != 4 {
		t.Fatalf("server advertises max concurrent streams %d, want the option's 4", got)
	}
	for id := uint32(1); id <= 7; id += 2 {
		if err := h.call(id, sayHello); err != nil {
			t.Fatal(err)
		}
	}
	g.waitEntered(t, 4)
	if err := h.call(9, sayHello); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	refused := make(chan error, 1)
	go func() {
		_, err := h.next(ctx, func(ev h2event) bool {
			return ev.typ == http2.FrameRSTStream && ev.stream == 9 && ev.code == http2.ErrCodeRefusedStream
		})
		refused <- err
	}()
	select {
	case err := <-refused:
		if err != nil {
			t.Fatalf("fifth stream over a limit of 4: no REFUSED_STREAM: %v", err)
		}
	case <-g.entered:
		t.Fatalf("a fifth handler started on one connection with a limit of 4 (%d running)", g.cur.Load())
	}
	h.conn.Close() // ends the 4 calls
	g.waitLeft(t, 4)

	g.max.Store(0)
	conn, err := grpc.NewClient("passthrough:///"+srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := greeterpb.NewGreeterClient(conn)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const calls = 12
	errs := make(chan error, calls)
	var wg sync.WaitGroup
	for range calls {
		wg.Go(func() {
			_, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "x"})
			errs <- err
		})
	}
	g.waitEntered(t, 4)
	g.open()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a call beyond the stream limit failed instead of waiting: %v", err)
		}
	}
	if m := g.max.Load(); m > 4 {
		t.Errorf("%d calls ran at once on one connection with a limit of 4", m)
	}
}

// closedBy reads conn (a plaintext grpc server sends its SETTINGS at
// once) until the peer closes it, then sends nil; or our read deadline's
// error if it comes first.
func closedBy(conn net.Conn, within time.Duration) <-chan error {
	out := make(chan error, 1)
	go func() {
		conn.SetReadDeadline(time.Now().Add(within))
		_, err := io.Copy(io.Discard, conn)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			out <- err
			return
		}
		out <- nil
	}()
	return out
}

// A connection that never sends anything (no TLS hello, no HTTP/2
// preface) is closed by the server after DefaultConnectionTimeout, on a
// plaintext and on a TLS server, not grpc's 120 s; a shorter timeout
// given with WithServerOptions wins: a connection opened later to such a
// server is closed first.
func TestSilentConnectionsClosed(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t)
	dir := devPKI(t)
	const bound = 60 * time.Second // well past the default, well short of grpc's 120 s
	plain := startGreeter(t, c.Endpoints(), newHoldGreeter())
	withTLS := startGreeter(t, c.Endpoints(), newHoldGreeter(), lodestar.WithTLS(tlsFor(dir, "user")))
	silent := func(addr string) net.Conn {
		conn, err := net.DialTimeout("tcp", addr, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	// With its own short timeout. Every server is started before the
	// first silent connection is made, so a slow start cannot let the
	// default timeout run out first; the short one's connection is made
	// last, so it is the youngest.
	short := startGreeter(t, c.Endpoints(), newHoldGreeter(), lodestar.WithServerOptions(grpc.ConnectionTimeout(200*time.Millisecond)))
	plainClosed := closedBy(silent(plain.Addr()), bound)
	tlsClosed := closedBy(silent(withTLS.Addr()), bound)
	shortClosed := closedBy(silent(short.Addr()), bound)

	select {
	case err := <-shortClosed:
		if err != nil {
			t.Fatalf("silent connection to a server with a 200ms connection timeout: still open after %v", bound)
		}
	case err := <-plainClosed:
		t.Fatalf("the default connection timeout closed a connection before WithServerOptions' shorter one closed a younger connection (%v)", err)
	}
	if err := <-plainClosed; err != nil {
		t.Errorf("silent plaintext connection: still open after %v (default connection timeout %v)", bound, lodestar.DefaultConnectionTimeout)
	}
	if err := <-tlsClosed; err != nil {
		t.Errorf("silent connection to a TLS server: still open after %v (default connection timeout %v)", bound, lodestar.DefaultConnectionTimeout)
	}
}

// A connection without calls gets GOAWAY after the server's default idle
// limit (shortened here: the default is 5 minutes); a limit given with
// WithServerOptions wins over the default.
func TestIdleConnectionsClosed(t *testing.T) {
	t.Parallel()
	c := etcdtest.New(t)
	byDefault := startGreeter(t, c.Endpoints(), newHoldGreeter(), lodestar.WithDefaultMaxConnectionIdle(200*time.Millisecond))
	byOption := startGreeter(t, c.Endpoints(), newHoldGreeter(),
		lodestar.WithServerOptions(grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 200 * time.Millisecond})))
	for name, srv := range map[string]*lodestar.Server{"default": byDefault, "WithServerOptions": byOption} {
		h := dialH2(t, srv.Addr())
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		ev, err := h.next(ctx, func(ev h2event) bool { return ev.typ == http2.FrameGoAway })
		cancel()
		if err != nil {
			t.Errorf("%s idle limit of 200ms: no GOAWAY on an idle connection within 60 s: %v", name, err)
			continue
		}
		if ev.code != http2.ErrCodeNo {
			t.Errorf("%s idle limit: GOAWAY %v %q, want NO_ERROR", name, ev.code, ev.debug)
		}
	}
}
