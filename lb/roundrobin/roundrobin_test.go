package roundrobin_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/lb/roundrobin"
	"github.com/lodestar-rpc/lodestar/registry"
)

// TestMain checks for goroutines left over, giving those that are ending
// time to end (lbtest.VerifyTestMain).
func TestMain(m *testing.M) { lbtest.VerifyTestMain(m) }

func TestParseConfig(t *testing.T) {
	p := balancer.Get(roundrobin.Name).(balancer.ConfigParser)
	for _, ok := range []string{``, `{}`, `{"outlierEjection":{"consecutiveFailures":3,"baseEjectionTime":"1s"}}`, `{"outlierEjection":{"disabled":true}}`} {
		if _, err := p.ParseConfig([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for js, want := range map[string]string{
		`{"outlierEjection":{"maxEjectionPercent":101}}`:                       "maxEjectionPercent 101",
		`{"outlierEjection":{"consecutiveFailures":-1}}`:                       "consecutiveFailures -1",
		`{"outlierEjection":{"baseEjectionTime":"1m","maxEjectionTime":"1s"}}`: "maxEjectionTime 1s: want at least baseEjectionTime 1m0s",
		`{"outlierEjection":{"after":3}}`:                                      `unknown field "after"`,
		`{"weights":[1]}`:                                                      `unknown field "weights"`,
	} {
		if _, err := p.ParseConfig([]byte(js)); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), roundrobin.Name) {
			t.Errorf("%s: error %v, want one naming %s with %q", js, err, roundrobin.Name, want)
		}
	}
}

type cfg struct {
	Eject lb.OutlierEjection `json:"outlierEjection"`
}

// ejectFirst makes calls until three of them have failed on the failing
// instance 0, which ejects it (ConsecutiveFailures 3).
func ejectFirst(t *testing.T, r *lbtest.Rig, conn *grpc.ClientConn) {
	t.Helper()
	r.Srv[0].FailWith(codes.Internal) // not retried: every failure shows
	failed := 0
	for calls := 0; failed < 3; calls++ {
		if calls == 100 {
			t.Fatalf("%d of 100 calls reached the failing instance", failed)
		}
		if _, err := r.Call(context.Background(), conn); status.Code(err) == codes.Internal {
			failed++
		}
	}
}

// A failing instance stops getting calls after a few failures: with a
// one-minute ejection, none of the next 100 calls reaches it, however
// slowly they come.
func TestFailingInstanceEjected(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	conn := r.Dial(roundrobin.Name, cfg{lb.OutlierEjection{ConsecutiveFailures: 3, BaseEjectionTime: lb.Duration(time.Minute)}})
	r.WaitAll(conn, 0, 1, 2)
	ejectFirst(t, r, conn)
	for i := range 100 {
		_, err := r.Call(context.Background(), conn)
		if status.Code(err) == codes.Internal {
			t.Fatalf("call %d after the third failure reached the failing instance", i+1)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// An ejected instance that has recovered gets calls again once its
// ejection time is up. (That it gets none before is shown above with a
// long ejection, and the ejection's arithmetic on a simulated clock in
// lb/internal/pick.)
func TestEjectedInstanceBack(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	conn := r.Dial(roundrobin.Name, cfg{lb.OutlierEjection{ConsecutiveFailures: 3, BaseEjectionTime: lb.Duration(time.Second)}})
	r.WaitAll(conn, 0, 1, 2)
	ejectFirst(t, r, conn)
	r.Srv[0].FailWith(codes.OK)
	deadline := time.Now().Add(30 * time.Second) // bounds a hang only
	for calls := 1; ; calls++ {
		i, err := r.Call(context.Background(), conn)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			t.Logf("back after %d calls", calls)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("recovered instance got none of %d calls in 30 s after a 1 s ejection", calls)
		}
	}
}

// Never more than the configured share of instances is ejected: with 50%
// of 3, one; the others keep taking calls even though they fail.
func TestMaxEjectionPercent(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	conn := r.Dial(roundrobin.Name, cfg{lb.OutlierEjection{ConsecutiveFailures: 2, BaseEjectionTime: lb.Duration(time.Minute)}})
	r.WaitAll(conn, 0, 1, 2)
	for _, s := range r.Srv {
		s.FailWith(codes.Unknown)
	}
	ctx := context.Background()
	for range 30 {
		r.Call(ctx, conn)
	}
	before := make([]int64, 3)
	for i, s := range r.Srv {
		before[i] = s.Calls()
	}
	for range 60 {
		r.Call(ctx, conn)
	}
	served := 0
	for i, s := range r.Srv {
		if s.Calls() > before[i] {
			served++
		}
	}
	if served != 2 {
		t.Errorf("%d instances still served calls, want 2 (one ejected, 50%% of 3 rounds down)", served)
	}
}

// lb.Avoid steers a call away from an instance while another is ready,
// and takes it when it is the only one.
func TestAvoid(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{})
	conn := r.Dial(roundrobin.Name, nil)
	r.WaitAll(conn, 0, 1)
	ctx := lb.Avoid(context.Background(), r.Srv[0].Addr)
	if c := r.Counts(ctx, conn, 100); c[0] != 0 || c[1] != 100 {
		t.Errorf("avoiding server 0: calls per server %v", c)
	}
	ctx = lb.Avoid(ctx, r.Srv[1].Addr)
	if c := r.Counts(ctx, conn, 100); c[0]+c[1] != 100 {
		t.Errorf("avoiding both: calls per server %v", c)
	}
}

// An instance failing half its calls never fails 5 in a row, but its
// failure rate is far above its peers': it is ejected.
func TestHalfFailingInstanceEjectedByRate(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	conn := r.DialPlain(roundrobin.Name, cfg{lb.OutlierEjection{BaseEjectionTime: lb.Duration(time.Minute)}})
	r.WaitAll(conn, 0, 1, 2)
	r.Srv[0].FailSome(codes.Unavailable, 1, 2)
	ctx := context.Background()
	for range 300 { // ejected within these
		r.Call(ctx, conn)
	}
	before := r.Srv[0].Calls()
	failed := 0
	for range 300 {
		if _, err := r.Call(ctx, conn); err != nil {
			failed++
		}
	}
	if n := r.Srv[0].Calls() - before; n != 0 || failed != 0 {
		t.Errorf("after 300 calls the half-failing instance still got %d calls (%d failed)", n, failed)
	}
}
