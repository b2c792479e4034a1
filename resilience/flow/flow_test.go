package flow_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
	"github.com/lodestar-rpc/lodestar/resilience/flow"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

const check = "/grpc.health.v1.Health/Check"

func serve(t *testing.T, rules ...flow.Rule) (*testserver.Server, *grpc.ClientConn, *flow.Limiter) {
	t.Helper()
	lim, err := flow.New(rules...)
	if err != nil {
		t.Fatal(err)
	}
	s := testserver.StartWith(t, grpc.ChainUnaryInterceptor(lim.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(lim.StreamServerInterceptor()))
	conn, err := grpc.NewClient("passthrough:///"+s.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return s, conn, lim
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		rules []flow.Rule
		want  string
	}{
		{[]flow.Rule{{Method: "CreateOrder", QPS: 1}}, `rule method "CreateOrder": want "/pkg.Service/Method"`},
		{[]flow.Rule{{Method: "/a.B/", QPS: 1}}, `rule method "/a.B/"`},
		{[]flow.Rule{{Method: "/a.B/C", QPS: -1}}, "qps -1"},
		{[]flow.Rule{{Method: "/a.B/C"}}, "limits nothing"},
		{[]flow.Rule{{Method: "/a.B/C", Concurrency: 2, MaxWait: time.Second}}, "need qps"},
		{[]flow.Rule{{Method: "/a.B/C", Concurrency: -2}}, "concurrency -2"},
		{[]flow.Rule{{Method: "/a.B/C", QPS: 1}, {Method: "/a.B/C", Concurrency: 1}}, "two rules for /a.B/C"},
	} {
		if _, err := flow.New(c.rules...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.rules, err, c.want)
		}
	}
}

// Through grpc, calls over a 100 QPS rule are rejected with
// RESOURCE_EXHAUSTED naming the rule, and no more calls are admitted than
// the bucket holds (its burst, plus 100 a second of the time the calls
// took, however long a loaded machine made that). The rate itself, on the
// limiter's own clock: TestRateAdmits100PerSecond.
func TestRateRuleRejectsOverTheRate(t *testing.T) {
	rule := flow.Rule{Method: check, QPS: 100}
	_, conn, _ := serve(t, rule)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const calls = 300
	var admitted, rejected, other atomic.Int64
	var msg atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range calls {
		wg.Go(func() {
			err := testserver.Call(ctx, conn)
			switch status.Code(err) {
			case codes.OK:
				admitted.Add(1)
			case codes.ResourceExhausted:
				rejected.Add(1)
				msg.Store(status.Convert(err).Message())
			default:
				other.Add(1)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	most := 5 + int64(100*took.Seconds()) + 1 // burst QPS/20, the rate over the time taken, one token being refilled
	t.Logf("%d calls at once in %v: %d admitted (at most %d), %d rejected, message %q", calls, took.Round(time.Millisecond), admitted.Load(), most, rejected.Load(), msg.Load())
	if admitted.Load() > most {
		t.Errorf("%d calls admitted in %v, more than a 100 QPS bucket with a burst of 5 holds (%d)", admitted.Load(), took, most)
	}
	if other.Load() != 0 {
		t.Errorf("%d calls failed otherwise", other.Load())
	}
	if admitted.Load() < calls {
		if m, _ := msg.Load().(string); !strings.Contains(m, "flow rule "+check+" qps=100") {
			t.Errorf("rejection message %q does not name the rule", m)
		}
	}
}

// A concurrency limit of 4 admits exactly 4 of 10 simultaneous calls,
// and admits again once they end.
func TestConcurrencyLimitHoldsExactly(t *testing.T) {
	s, conn, _ := serve(t, flow.Rule{Method: "/grpc.health.v1.Health/*", Concurrency: 4})
	entered, release := s.HoldCalls()
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := make(chan error, 10)
	for range 10 {
		go func() { errs <- testserver.Call(ctx, conn) }()
	}
	for range 4 {
		select {
		case <-entered:
		case <-ctx.Done():
			t.Fatal("4 calls never reached the handler")
		}
	}
	for range 6 {
		err := <-errs
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "concurrency=4") || !strings.Contains(err.Error(), "concurrency limit reached") {
			t.Fatalf("call beyond the limit: %v", err)
		}
	}
	if n := s.Calls(); n != 4 {
		t.Errorf("%d handlers ran, want exactly 4", n)
	}
	release()
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("admitted call: %v", err)
		}
	}
	// Released: a stream (the same service's rule) is admitted and counts.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := healthpb.NewHealthClient(conn).Watch(sctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("stream under the limit: %v", err)
	}
}

// With MaxWait, calls over the rate wait for a token instead of failing;
// without it they are rejected at once.
func TestMaxWaitQueues(t *testing.T) {
	for _, c := range []struct {
		wait time.Duration
		ok   int
	}{{0, 1}, {2 * time.Second, 5}} {
		_, conn, _ := serve(t, flow.Rule{Method: check, QPS: 10, Burst: 1, MaxWait: c.wait})
		var ok atomic.Int64
		var wg sync.WaitGroup
		for range 5 {
			wg.Go(func() {
				if testserver.Call(context.Background(), conn) == nil {
					ok.Add(1)
				}
			})
		}
		wg.Wait()
		if int(ok.Load()) != c.ok {
			t.Errorf("maxWait %v: %d of 5 admitted, want %d", c.wait, ok.Load(), c.ok)
		}
	}
}

// A wait for a token never outlasts the call's deadline: such a call is
// rejected at once. The next token is 1,000 s away, within MaxWait but
// far past the call's 30 s deadline: a limiter that waited would end the
// call with DEADLINE_EXCEEDED at the deadline, one that did not wait
// rejects it with RESOURCE_EXHAUSTED naming the rate limit, long before.
func TestWaitBoundedByDeadline(t *testing.T) {
	_, conn, _ := serve(t, flow.Rule{Method: check, QPS: 0.001, Burst: 1, MaxWait: time.Hour})
	if err := testserver.Call(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := testserver.Call(ctx, conn)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "rate limit reached") {
		t.Errorf("call that could not get a token before its deadline: %v, want RESOURCE_EXHAUSTED at once", err)
	}
}

// Update swaps rules while serving; an unchanged rule keeps its state.
func TestUpdate(t *testing.T) {
	s, conn, lim := serve(t, flow.Rule{Method: check, Concurrency: 1})
	entered, release := s.HoldCalls()
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- testserver.Call(ctx, conn) }()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the call never reached the handler")
	}
	// Same rule plus another: the call in flight still counts.
	if err := lim.Update(flow.Rule{Method: check, Concurrency: 1}, flow.Rule{Method: "*", QPS: 1000}); err != nil {
		t.Fatal(err)
	}
	if err := testserver.Call(context.Background(), conn); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second call under a kept concurrency-1 rule: %v", err)
	}
	// A changed rule (a QPS added) still counts the call in flight.
	if err := lim.Update(flow.Rule{Method: check, Concurrency: 1, QPS: 1000}); err != nil {
		t.Fatal(err)
	}
	if err := testserver.Call(context.Background(), conn); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second call under a changed concurrency-1 rule: %v", err)
	}
	if err := lim.Update(flow.Rule{Method: check, Concurrency: 1}, flow.Rule{Method: "*", QPS: 1000}); err != nil {
		t.Fatal(err)
	}
	if err := lim.Update(flow.Rule{Method: check, QPS: -1}); err == nil {
		t.Error("bad update accepted")
	}
	if got := len(lim.Rules()); got != 2 {
		t.Errorf("a failed update changed the rules: %d", got)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := lim.Update(); err != nil {
		t.Fatal(err)
	}
	if err := testserver.Call(context.Background(), conn); err != nil {
		t.Errorf("no rules: %v", err)
	}
}
