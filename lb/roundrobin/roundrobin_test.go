package roundrobin_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/lb/roundrobin"
	"github.com/lodestar-rpc/lodestar/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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

// A failing instance stops getting calls within a few failures, and gets
// them again once its ejection time is up and it has recovered.
func TestFailingInstanceEjectedThenBack(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	const base = time.Second
	conn := r.Dial(roundrobin.Name, cfg{lb.OutlierEjection{ConsecutiveFailures: 3, BaseEjectionTime: lb.Duration(base)}})
	r.WaitAll(conn, 0, 1, 2)
	r.Srv[0].FailWith(codes.Internal) // not retried: every failure shows
	ctx := context.Background()
	failed := 0
	for calls := 0; failed < 3; calls++ {
		if calls == 100 {
			t.Fatalf("%d of 100 calls reached the failing instance", failed)
		}
		if _, err := r.Call(ctx, conn); status.Code(err) == codes.Internal {
			failed++
		}
	}
	ejectedAt := time.Now()
	// Ejected after the third failure: no call reaches it for the rest of
	// half its ejection time (a slow machine makes fewer calls, never a
	// call that fails).
	after := 0
	for time.Since(ejectedAt) < base/2 {
		_, err := r.Call(ctx, conn)
		if status.Code(err) == codes.Internal {
			t.Fatalf("call %d after the third failure reached the failing instance", after+1)
		}
		if err != nil {
			t.Fatal(err)
		}
		after++
	}
	if after < 10 {
		t.Fatalf("only %d calls in %v: too few to tell", after, base/2)
	}
	r.Srv[0].FailWith(codes.OK)
	// Back after its ejection time (the first: base).
	for {
		i, err := r.Call(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			break
		}
		if time.Since(ejectedAt) > 10*base {
			t.Fatal("recovered instance never got calls again")
		}
	}
	if back := time.Since(ejectedAt); back < base*9/10 {
		t.Errorf("back after %v, before its ejection time %v", back, base)
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
