// Package testserver runs real gRPC servers on 127.0.0.1 for tests: each
// answers grpc.health.v1 Check, counts the calls it serves, and can be told
// to fail them.
package testserver

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// Server is one running gRPC server.
type Server struct {
	Addr  string
	calls atomic.Int64
	conns atomic.Int64 // connections accepted
	fail  atomic.Pointer[status.Status]
	delay atomic.Int64 // ns each call waits before answering
	hold  atomic.Pointer[hold]
	some  atomic.Pointer[failSome]
	stall atomic.Pointer[stallSome]

	healthpb.UnimplementedHealthServer
	srv      *grpc.Server
	stopOnce sync.Once
	done     chan struct{}
}

// Start starts a server on a free 127.0.0.1 port; it is stopped at cleanup.
func Start(t testing.TB) *Server { return StartWith(t) }

// StartWith starts a server with opts (interceptors, credentials).
func StartWith(t testing.TB, opts ...grpc.ServerOption) *Server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: lis.Addr().String(), done: make(chan struct{})}
	s.srv = grpc.NewServer(append([]grpc.ServerOption{grpc.StatsHandler(connCounter{&s.conns})}, opts...)...)
	healthpb.RegisterHealthServer(s.srv, s)
	go func() {
		defer close(s.done)
		s.srv.Serve(lis)
	}()
	t.Cleanup(s.Stop)
	return s
}

// StartN starts n servers.
func StartN(t testing.TB, n int) []*Server {
	out := make([]*Server, n)
	for i := range out {
		out[i] = Start(t)
	}
	return out
}

// Check answers SERVING, or the status set with FailWith, after the delay
// set with SetDelay, and counts the call.
func (s *Server) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	n := s.calls.Add(1)
	if f := s.some.Load(); f != nil && (n-1)%f.of < f.n {
		return nil, f.st.Err()
	}
	if h := s.hold.Load(); h != nil {
		h.entered <- struct{}{}
		select {
		case <-h.release:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	d := time.Duration(s.delay.Load())
	if st := s.stall.Load(); st != nil && (n-1)%st.of < st.n {
		d = st.d
	}
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if st := s.fail.Load(); st != nil {
		return nil, st.Err()
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// Conns returns how many connections the server has accepted.
func (s *Server) Conns() int64 { return s.conns.Load() }

// connCounter counts the connections a server accepts.
type connCounter struct{ n *atomic.Int64 }

func (c connCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (c connCounter) HandleRPC(context.Context, stats.RPCStats)                         {}
func (c connCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (c connCounter) HandleConn(_ context.Context, st stats.ConnStats) {
	if _, ok := st.(*stats.ConnBegin); ok {
		c.n.Add(1)
	}
}

// Calls returns how many calls the server has served.
func (s *Server) Calls() int64 { return s.calls.Load() }

// FailWith makes every later call fail with code c; codes.OK serves again.
func (s *Server) FailWith(c codes.Code) {
	if c == codes.OK {
		s.fail.Store(nil)
		return
	}
	s.fail.Store(status.New(c, "testserver: told to fail"))
}

type failSome struct {
	st    *status.Status
	n, of int64
}

// FailSome makes n of every `of` later calls fail with code c (the first
// n of each run of `of`, counting every call the server has served);
// n = 0 stops it.
func (s *Server) FailSome(c codes.Code, n, of int) {
	if n <= 0 || of <= 0 {
		s.some.Store(nil)
		return
	}
	s.some.Store(&failSome{st: status.New(c, "testserver: told to fail some"), n: int64(n), of: int64(of)})
}

type stallSome struct {
	d     time.Duration
	n, of int64
}

// StallSome makes n of every `of` later calls wait d before answering
// (counted as FailSome counts); n = 0 stops it.
func (s *Server) StallSome(d time.Duration, n, of int) {
	if n <= 0 || of <= 0 {
		s.stall.Store(nil)
		return
	}
	s.stall.Store(&stallSome{d: d, n: int64(n), of: int64(of)})
}

type hold struct {
	entered chan struct{}
	release chan struct{}
}

// HoldCalls makes later calls wait, once counted, until release is
// called; entered receives a value as each call starts waiting (it has
// room for 1,000). Calls after release answer at once.
func (s *Server) HoldCalls() (entered <-chan struct{}, release func()) {
	h := &hold{entered: make(chan struct{}, 1000), release: make(chan struct{})}
	s.hold.Store(h)
	var once sync.Once
	return h.entered, func() {
		once.Do(func() {
			s.hold.CompareAndSwap(h, nil)
			close(h.release)
		})
	}
}

// Watch sends SERVING, then keeps the stream open until the client ends
// it or the server stops; it counts as a call.
func (s *Server) Watch(_ *healthpb.HealthCheckRequest, ss healthpb.Health_WatchServer) error {
	s.calls.Add(1)
	if err := ss.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}); err != nil {
		return err
	}
	<-ss.Context().Done()
	return nil
}

// SetDelay makes every later call wait d before answering, as a slow
// instance does; 0 answers at once.
func (s *Server) SetDelay(d time.Duration) { s.delay.Store(int64(d)) }

// Stop stops the server abruptly (connections closed, calls in flight
// fail). It is safe to call more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.srv.Stop()
		<-s.done
	})
}

// Call makes one Check call on conn.
func Call(ctx context.Context, conn grpc.ClientConnInterface, opts ...grpc.CallOption) error {
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, opts...)
	return err
}
