package lodestar_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
	"github.com/lodestar-rpc/lodestar/examples/proto/userpb"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/resilience/breaker"
	"github.com/lodestar-rpc/lodestar/resilience/flow"
	"github.com/lodestar-rpc/lodestar/resilience/retry"
	"github.com/lodestar-rpc/lodestar/resilience/shed"
)

const createUser = "/lodestar.examples.user.UserService/CreateUser"

// A server's flow rule rejects calls over its rate with the rule named,
// leaves other methods alone, and can be changed while serving; a
// handler's panic becomes INTERNAL and the server serves on.
func TestServerFlowRulesAndRecovery(t *testing.T) {
	c := etcdtest.New(t)
	in := startInstance(t, c.Endpoints(), lodestar.WithFlowRules(flow.Rule{Method: createUser, QPS: 0.001, Burst: 1}))
	conn := dial(t, c.Endpoints())
	users := userpb.NewUserServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	rejected := 0
	for range 10 {
		_, err := users.CreateUser(ctx, &userpb.CreateUserRequest{Name: "a", Email: "a@example.com"})
		if status.Code(err) == codes.ResourceExhausted {
			rejected++
			if !strings.Contains(err.Error(), "flow rule "+createUser+" qps=0.001 burst=1: rate limit reached") {
				t.Errorf("rejection does not name the rule: %v", err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
	}
	// One token, the next 1,000 s away: however slowly the calls go,
	// exactly one is admitted.
	if rejected != 9 {
		t.Errorf("%d of 10 calls rejected by a rule with a burst of 1 and a token per 1,000 s, want 9", rejected)
	}
	if n := in.user.creates.Load(); n+int64(rejected) != 10 {
		t.Errorf("%d handlers ran for %d admitted calls", n, 10-rejected)
	}
	for range 10 {
		if _, err := users.GetUser(ctx, &userpb.UserRequest{UserId: "1"}); err != nil {
			t.Fatalf("GetUser, not limited: %v", err)
		}
	}
	if err := in.srv.FlowLimiter().Update(); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := users.CreateUser(ctx, &userpb.CreateUserRequest{Name: "a", Email: "a@example.com"}); err != nil {
			t.Fatalf("CreateUser after the rule was removed: %v", err)
		}
	}

	g := greeterpb.NewGreeterClient(conn)
	if _, err := g.SayHello(ctx, &greeterpb.HelloRequest{Name: "panic"}); status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "internal error (panic") {
		t.Fatalf("panicking handler: %v", err)
	}
	if r, err := g.SayHello(ctx, &greeterpb.HelloRequest{Name: "again"}); err != nil || r.Message != "Hello again" {
		t.Fatalf("after the panic: %v, %v", r, err)
	}
}

// Resilience options with bad values fail Dial or NewServer with an error
// naming what is wrong.
func TestResilienceOptionsValidated(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		opt  lodestar.Option
		want string
	}{
		{lodestar.WithBreaker(breaker.WithConfig(breaker.Config{FailureRatio: 3})), "failureRatio 3"},
		{lodestar.WithHedging(createUser, retry.Hedge{Delay: time.Millisecond}), "hedge " + createUser + ": the method is not declared idempotent"},
		{lodestar.WithTimeout(-time.Second, nil), "default timeout -1s"},
		{lodestar.WithRetry(retry.Config{BudgetRatio: 5}), "budgetRatio 5"},
		{lodestar.WithOutlierEjection(lb.OutlierEjection{MaxEjectionPercent: 200}), "maxEjectionPercent 200"},
	} {
		conn, err := lodestar.Dial(ctx, "user", lodestar.WithEtcdEndpoints("http://127.0.0.1:1"), c.opt)
		if err == nil {
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Dial: error %v, want %q", err, c.want)
		}
	}
	if _, err := lodestar.Dial(ctx, "user", lodestar.WithBalancer("round_robin"), lodestar.WithOutlierEjection(lb.OutlierEjection{})); err == nil || !strings.Contains(err.Error(), "outlier ejection needs a lodestar balancer") {
		t.Errorf("ejection with grpc's round_robin: %v", err)
	}
	for _, c := range []struct {
		opt  lodestar.Option
		want string
	}{
		{lodestar.WithFlowRules(flow.Rule{Method: "CreateUser", QPS: 1}), `rule method "CreateUser"`},
		{lodestar.WithShedding(shed.Config{CPUThreshold: 2}), "cpuThreshold 2"},
	} {
		if _, err := lodestar.NewServer("user", lodestar.WithEtcdEndpoints("http://127.0.0.1:1"), c.opt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewServer: error %v, want %q", err, c.want)
		}
	}
}
