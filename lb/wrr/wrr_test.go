package wrr_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lodestar-rpc/lodestar/discovery"
	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
	"github.com/lodestar-rpc/lodestar/lb/wrr"
	"github.com/lodestar-rpc/lodestar/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseConfig(t *testing.T) {
	p := balancer.Get(wrr.Name).(balancer.ConfigParser)
	if _, err := p.ParseConfig([]byte(`{}`)); err != nil {
		t.Errorf("{}: %v", err)
	}
	if _, err := p.ParseConfig([]byte(`{"weights":[1]}`)); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Errorf("unknown field: %v", err)
	}
}

type fixture struct {
	cli  *clientv3.Client
	reg  *registry.Registrar
	srv  []*testserver.Server
	conn *grpc.ClientConn
}

func setup(t *testing.T, weights ...int) *fixture {
	t.Helper()
	c := etcdtest.New(t)
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: c.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	reg, err := registry.New(cli, registry.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	f := &fixture{cli: cli, reg: reg, srv: testserver.StartN(t, len(weights))}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, s := range f.srv {
		in := registry.Instance{Service: "user", Addr: s.Addr, Metadata: registry.Metadata{Weight: weights[i]}}
		if _, err := reg.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
		if weights[i] == 0 {
			if err := reg.SetWeight(ctx, "user", s.Addr, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, err := discovery.NewBuilder(cli)
	if err != nil {
		t.Fatal(err)
	}
	f.conn, err = grpc.NewClient(discovery.Target("user"), grpc.WithResolvers(b),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, wrr.Name)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.conn.Close() })
	return f
}

// waitAllReady makes calls until every server with a positive weight has
// served one, so that shares are measured over a settled picker.
func (f *fixture) waitAllReady(t *testing.T, weights []int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		all := true
		for i, s := range f.srv {
			if weights[i] > 0 && s.Calls() == 0 {
				all = false
			}
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("not every weighted server got a call")
		}
		f.call(t)
	}
}

func (f *fixture) call(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := testserver.Call(ctx, f.conn); err != nil {
		t.Fatal(err)
	}
}

// shares makes n calls and returns each server's share of them.
func (f *fixture) shares(t *testing.T, n int) []float64 {
	t.Helper()
	before := make([]int64, len(f.srv))
	for i, s := range f.srv {
		before[i] = s.Calls()
	}
	for range n {
		f.call(t)
	}
	out := make([]float64, len(f.srv))
	for i, s := range f.srv {
		out[i] = float64(s.Calls()-before[i]) / float64(n)
	}
	return out
}

func checkShares(t *testing.T, got []float64, weights []int) {
	t.Helper()
	total := 0
	for _, w := range weights {
		total += w
	}
	for i, w := range weights {
		want := float64(w) / float64(total)
		if math.Abs(got[i]-want) > 0.02 {
			t.Errorf("server %d: share %.4f, want %.4f ± 0.02 (weights %v, shares %v)", i, got[i], want, weights, got)
		}
	}
}

func TestSharesFollowWeightsAndChanges(t *testing.T) {
	weights := []int{10, 20, 70}
	f := setup(t, weights...)
	f.waitAllReady(t, weights)
	got := f.shares(t, 10000)
	t.Logf("weights %v → shares %.4f", weights, got)
	checkShares(t, got, weights)

	// A weight change in etcd applies without reconnecting.
	conns := make([]int64, len(f.srv))
	for i, s := range f.srv {
		conns[i] = s.Conns()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.reg.SetWeight(ctx, "user", f.srv[2].Addr, 20); err != nil {
		t.Fatal(err)
	}
	weights = []int{10, 20, 20}
	// Wait until the picker carries the new weights: a window of 500
	// calls close to the new shares.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := f.shares(t, 500)
		if math.Abs(s[2]-0.4) < 0.05 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("weight change not applied: shares %v", s)
		}
	}
	got = f.shares(t, 10000)
	t.Logf("weights %v → shares %.4f", weights, got)
	checkShares(t, got, weights)
	for i, s := range f.srv {
		if s.Conns() != conns[i] {
			t.Errorf("server %d: %d connections before the weight change, %d after: it reconnected", i, conns[i], s.Conns())
		}
	}
}

func TestWeightZeroGetsNoCalls(t *testing.T) {
	weights := []int{0, 50, 50}
	f := setup(t, weights...)
	f.waitAllReady(t, weights)
	got := f.shares(t, 2000)
	if got[0] != 0 {
		t.Errorf("weight-0 server got %.4f of calls", got[0])
	}
	checkShares(t, got, weights)
}
