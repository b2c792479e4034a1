package recovery_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
	"github.com/lodestar-rpc/lodestar/resilience/recovery"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

// panicky panics in both handlers on the first call, then answers.
type panicky struct {
	healthpb.UnimplementedHealthServer
	mu     sync.Mutex
	called map[string]bool
}

func (p *panicky) first(m string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := !p.called[m]
	p.called[m] = true
	return f
}

func (p *panicky) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if p.first("check") {
		panic("boom: secret-token-123")
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (p *panicky) Watch(_ *healthpb.HealthCheckRequest, ss healthpb.Health_WatchServer) error {
	var m map[string]int
	//lint:ignore SA5000 the nil-map write is the runtime panic under test
	m["x"]++
	return nil
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPanicBecomesInternalAndIsLogged(t *testing.T) {
	var logs syncBuf
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(logger)),
		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(logger)))
	healthpb.RegisterHealthServer(srv, &panicky{called: map[string]bool{}})
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	defer func() { srv.Stop(); <-done }()
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := healthpb.NewHealthClient(conn)
	ctx := context.Background()

	_, err = c.Check(ctx, &healthpb.HealthCheckRequest{})
	st := status.Convert(err)
	if st.Code() != codes.Internal || !strings.Contains(st.Message(), "/grpc.health.v1.Health/Check: internal error (panic") {
		t.Fatalf("panicking unary call: %v", err)
	}
	if strings.Contains(st.Message(), "secret-token") {
		t.Errorf("the panic value reached the client: %q", st.Message())
	}
	// The process lives on and serves.
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("call after the panic: %v", err)
	}
	w, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); status.Code(err) != codes.Internal {
		t.Fatalf("panicking stream: %v", err)
	}
	out := logs.String()
	// The id the client sees finds the entry in the log.
	id := regexp.MustCompile(`panic (\d+),`).FindStringSubmatch(st.Message())
	if id == nil {
		t.Fatalf("no panic id in %q", st.Message())
	}
	for _, want := range []string{"panic in handler", "boom: secret-token-123", "assignment to entry in nil map", "recovery_test.go", "panic_id=" + id[1] + " "} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}
