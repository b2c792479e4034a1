package wrr_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb/wrr"
	"github.com/lodestar-rpc/lodestar/registry"
)

// TestMain checks for goroutines left over, giving those that are ending
// time to end (lbtest.VerifyTestMain).
func TestMain(m *testing.M) { lbtest.VerifyTestMain(m) }

func TestParseConfig(t *testing.T) {
	p := balancer.Get(wrr.Name).(balancer.ConfigParser)
	if _, err := p.ParseConfig([]byte(`{}`)); err != nil {
		t.Errorf("{}: %v", err)
	}
	if _, err := p.ParseConfig([]byte(`{"weights":[1]}`)); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Errorf("unknown field: %v", err)
	}
}

// setup registers one server per weight (0 included, which a registration
// cannot carry: it is set after) and dials them through wrr.
func setup(t *testing.T, weights ...int) (*lbtest.Rig, *grpc.ClientConn) {
	t.Helper()
	r := lbtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, w := range weights {
		i := r.Add(registry.Metadata{Weight: w})
		if w == 0 {
			if err := r.Reg.SetWeight(ctx, lbtest.Service, r.Srv[i].Addr, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	return r, r.DialPlain(wrr.Name, nil)
}

// weighted returns the indexes of the servers with a positive weight.
func weighted(weights []int) []int {
	var out []int
	for i, w := range weights {
		if w > 0 {
			out = append(out, i)
		}
	}
	return out
}

// shares makes n calls and returns each server's share of them.
func shares(t *testing.T, r *lbtest.Rig, conn *grpc.ClientConn, n int) []float64 {
	t.Helper()
	counts := r.Counts(context.Background(), conn, n)
	out := make([]float64, len(counts))
	for i, c := range counts {
		out[i] = float64(c) / float64(n)
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
	r, conn := setup(t, weights...)
	r.WaitAll(conn, weighted(weights)...)
	got := shares(t, r, conn, 10000)
	t.Logf("weights %v → shares %.4f", weights, got)
	checkShares(t, got, weights)

	// A weight change in etcd applies without reconnecting.
	conns := make([]int64, len(r.Srv))
	for i, s := range r.Srv {
		conns[i] = s.Conns()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Reg.SetWeight(ctx, lbtest.Service, r.Srv[2].Addr, 20); err != nil {
		t.Fatal(err)
	}
	weights = []int{10, 20, 20}
	// Wait until the picker carries the new weights: a window of 500
	// calls close to the new shares.
	deadline := time.Now().Add(30 * time.Second) // bounds a hang only
	for {
		s := shares(t, r, conn, 500)
		if math.Abs(s[2]-0.4) < 0.05 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("weight change not applied: shares %v", s)
		}
	}
	got = shares(t, r, conn, 10000)
	t.Logf("weights %v → shares %.4f", weights, got)
	checkShares(t, got, weights)
	for i, s := range r.Srv {
		if s.Conns() != conns[i] {
			t.Errorf("server %d: %d connections before the weight change, %d after: it reconnected", i, conns[i], s.Conns())
		}
	}
}

func TestWeightZeroGetsNoCalls(t *testing.T) {
	weights := []int{0, 50, 50}
	r, conn := setup(t, weights...)
	r.WaitAll(conn, weighted(weights)...)
	got := shares(t, r, conn, 2000)
	if got[0] != 0 {
		t.Errorf("weight-0 server got %.4f of calls", got[0])
	}
	checkShares(t, got, weights)
}
