package breaker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
	"github.com/lodestar-rpc/lodestar/resilience/breaker"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

const check = "/grpc.health.v1.Health/Check"

type change struct{ from, to breaker.State }

// setup dials one test server through breakers made with opts; state
// changes arrive on the returned channel.
func setup(t *testing.T, opts ...breaker.Option) (*testserver.Server, healthpb.HealthClient, *breaker.Breakers, chan change) {
	t.Helper()
	s := testserver.Start(t)
	changes := make(chan change, 100)
	b, err := breaker.New(append(opts, breaker.WithStateChange(func(_, _ string, from, to breaker.State) {
		changes <- change{from, to}
	}))...)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///"+s.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(b.UnaryClientInterceptor()), grpc.WithChainStreamInterceptor(b.StreamClientInterceptor()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return s, healthpb.NewHealthClient(conn), b, changes
}

func call(c healthpb.HealthClient) (*healthpb.HealthCheckResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Check(ctx, &healthpb.HealthCheckRequest{})
}

func wantChange(t *testing.T, changes chan change, from, to breaker.State) {
	t.Helper()
	select {
	case c := <-changes:
		if c.from != from || c.to != to {
			t.Fatalf("state change %v → %v, want %v → %v", c.from, c.to, from, to)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no state change to %v", to)
	}
}

func TestOptionsValidated(t *testing.T) {
	for _, c := range []struct {
		opt  breaker.Option
		want string
	}{
		{breaker.WithConfig(breaker.Config{FailureRatio: 1.5}), "failureRatio 1.5"},
		{breaker.WithConfig(breaker.Config{MinCalls: -1}), "minCalls -1"},
		{breaker.WithConfig(breaker.Config{Window: time.Millisecond}), "window 1ms"},
		{breaker.WithConfig(breaker.Config{SlowCall: -time.Second}), "slowCall -1s"},
		{breaker.WithMethodConfig("Check", breaker.Config{}), `method "Check"`},
		{breaker.WithFallback(check, nil), "nil fallback for " + check},
	} {
		if _, err := breaker.New(c.opt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
}

// Opens at the failure ratio (not below it), returns the fallback's result
// while open, and a half-open probe closes it once the server recovers.
func TestOpensAtRatioFallsBackAndRecovers(t *testing.T) {
	cfg := breaker.Config{MinCalls: 10, FailureRatio: 0.5, OpenFor: 300 * time.Millisecond, HalfOpenCalls: 2}
	fallback := breaker.FallbackOf(func(_ context.Context, _ *healthpb.HealthCheckRequest, cause error) (*healthpb.HealthCheckResponse, error) {
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}, nil
	})
	s, c, b, changes := setup(t, breaker.WithConfig(cfg), breaker.WithFallback(check, fallback))

	// A third of calls failing: under the ratio at every point, the
	// breaker stays closed and failed calls get the fallback (they failed
	// for good).
	s.FailSome(codes.Unavailable, 1, 3)
	fallbacks := 0
	for range 50 {
		r, err := call(c)
		if err != nil {
			t.Fatalf("call with a fallback: %v", err)
		}
		if r.Status == healthpb.HealthCheckResponse_NOT_SERVING {
			fallbacks++
		}
	}
	if fallbacks != 17 || len(changes) != 0 {
		t.Fatalf("at 1/3 failures: %d fallbacks (want 17), %d state changes (want 0)", fallbacks, len(changes))
	}

	// 60%: opens.
	s.FailSome(codes.Unavailable, 3, 5)
	served := s.Calls()
	for len(changes) == 0 && s.Calls()-served < 100 {
		call(c)
	}
	wantChange(t, changes, breaker.Closed, breaker.Open)
	if got := b.State("passthrough:///"+s.Addr, check); got != breaker.Open {
		t.Errorf("State: %v", got)
	}
	// Open: the server sees no calls; callers get the fallback.
	served = s.Calls()
	for range 20 {
		r, err := call(c)
		if err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("open breaker: %v, %v; want the fallback's answer", r, err)
		}
	}
	if n := s.Calls() - served; n != 0 {
		t.Errorf("open breaker let %d calls through", n)
	}

	// Recovered: after OpenFor, probes pass and close it.
	s.FailSome(codes.OK, 0, 0)
	<-time.After(cfg.OpenFor) // the breaker's timeout is the event
	for range cfg.HalfOpenCalls {
		r, err := call(c)
		if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("probe: %v, %v", r, err)
		}
	}
	wantChange(t, changes, breaker.Open, breaker.HalfOpen)
	wantChange(t, changes, breaker.HalfOpen, breaker.Closed)
}

// Without a fallback an open breaker fails calls at once with UNAVAILABLE
// naming the breaker; a failed probe opens it again.
func TestOpenWithoutFallbackAndFailedProbe(t *testing.T) {
	cfg := breaker.Config{MinCalls: 5, FailureRatio: 1, OpenFor: 200 * time.Millisecond}
	s, c, _, changes := setup(t, breaker.WithMethodConfig(check, cfg))
	s.FailWith(codes.Internal)
	for range 5 {
		call(c)
	}
	wantChange(t, changes, breaker.Closed, breaker.Open)
	_, err := call(c)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "breaker open for passthrough:///"+s.Addr+check) {
		t.Fatalf("open breaker: %v", err)
	}
	<-time.After(cfg.OpenFor)
	if _, err := call(c); status.Code(err) != codes.Internal {
		t.Fatalf("probe: %v", err)
	}
	wantChange(t, changes, breaker.Open, breaker.HalfOpen)
	wantChange(t, changes, breaker.HalfOpen, breaker.Open)
}

// Slow successes trip it too; answers the server gives on purpose do not.
func TestSlowCallsTripAndAppErrorsDoNot(t *testing.T) {
	cfg := breaker.Config{MinCalls: 5, SlowCall: 20 * time.Millisecond, SlowRatio: 0.8}
	s, c, _, changes := setup(t, breaker.WithConfig(cfg))
	s.FailWith(codes.NotFound)
	for range 20 {
		if _, err := call(c); status.Code(err) != codes.NotFound {
			t.Fatal(err)
		}
	}
	if len(changes) != 0 {
		t.Fatalf("NOT_FOUND answers changed the state")
	}
	s.FailWith(codes.OK)
	s.SetDelay(40 * time.Millisecond)
	for range 5 {
		if _, err := call(c); err != nil {
			t.Fatal(err)
		}
	}
	// 5 slow of 25 calls is 20%: not yet. 80% needs the window to be
	// mostly slow: keep calling.
	if len(changes) != 0 {
		t.Fatalf("opened at 20%% slow calls, under the 0.8 ratio")
	}
	for i := 0; len(changes) == 0 && i < 200; i++ {
		call(c)
	}
	wantChange(t, changes, breaker.Closed, breaker.Open)
}
