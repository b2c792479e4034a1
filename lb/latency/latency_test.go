package latency_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/lb/latency"
	"github.com/lodestar-rpc/lodestar/registry"
)

// TestMain checks for goroutines left over, giving those that are ending
// time to end (lbtest.VerifyTestMain).
func TestMain(m *testing.M) { lbtest.VerifyTestMain(m) }

func TestParseConfig(t *testing.T) {
	p := balancer.Get(latency.Name).(balancer.ConfigParser)
	for _, ok := range []string{``, `{}`, `{"decay":"2s","probeInterval":"100ms","slowFactor":3}`} {
		if _, err := p.ParseConfig([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for js, want := range map[string]string{
		`{"decay":"1ms"}`:         "decay 1ms: want at least 10ms",
		`{"decay":"soon"}`:        `duration "soon"`,
		`{"decay":5}`:             "want a string",
		`{"probeInterval":"1ns"}`: "probeInterval 1ns",
		`{"slowFactor":1}`:        "slowFactor 1: want at least 1.5",
		`{"slow":2}`:              "unknown field",
	} {
		if _, err := p.ParseConfig([]byte(js)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one with %q", js, err, want)
		}
	}
}

// With one of three instances 10× slower, it gets under 10% of calls;
// once it recovers, traffic returns to it. The slow instance gets only its
// probes, one per probe interval, so its share falls as calls come faster:
// with a 1 s interval it stays under 10% unless calls take 100 ms on
// average, however loaded the machine; and calls are made for at least
// three intervals, so it is probed however fast they are.
func TestSlowInstanceAvoidedThenBack(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	const (
		base  = 2 * time.Millisecond
		probe = time.Second
	)
	r.Srv[0].SetDelay(10 * base)
	r.Srv[1].SetDelay(base)
	r.Srv[2].SetDelay(base)
	conn := r.Dial(latency.Name, latency.Config{ProbeInterval: lb.Duration(probe)})
	r.WaitAll(conn, 0, 1, 2)
	ctx := context.Background()

	// Let the averages learn (a few decay times' worth of calls), then
	// measure.
	r.Counts(ctx, conn, 300)
	c := make([]int, len(r.Srv))
	n := 0
	for start := time.Now(); n < 1000 || time.Since(start) < 3*probe; n++ {
		i, err := r.Call(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		c[i]++
	}
	slow := float64(c[0]) / float64(n)
	t.Logf("slow instance: calls per server %v, share %.3f", c, slow)
	if slow >= 0.10 {
		t.Errorf("10× slow instance got %.3f of calls, want under 0.10", slow)
	}
	if c[0] == 0 {
		t.Errorf("slow instance was never probed in %d calls over at least %v", n, 3*probe)
	}

	// Recovered: within a few probes its average falls and it gets its
	// share again.
	r.Srv[0].SetDelay(base)
	deadline := time.Now().Add(time.Minute) // bounds a hang only
	for {
		c := r.Counts(ctx, conn, 300)
		got := float64(c[0]) / 300
		if got > 0.2 {
			t.Logf("recovered instance: calls per server %v, share %.3f", c, got)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recovered instance still avoided: calls per server %v", c)
		}
	}
}

// A fast-failing instance is avoided too: errors weigh, not only latency.
func TestFailingInstanceAvoided(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	// Ejection off: the errors' weight in the policy is what is tested.
	conn := r.Dial(latency.Name, struct {
		Eject lb.OutlierEjection `json:"outlierEjection"`
	}{lb.OutlierEjection{Disabled: true}})
	r.WaitAll(conn, 0, 1, 2)
	r.Srv[0].FailWith(codes.Internal) // not retried: every failure shows
	ctx := context.Background()
	failed := 0
	for range 1000 {
		if _, err := r.Call(ctx, conn); err != nil {
			failed++
		}
	}
	t.Logf("failed calls: %d of 1000 (instance 0 served %d)", failed, r.Srv[0].Calls())
	if failed > 100 {
		t.Errorf("%d of 1000 calls went to the failing instance, want under 100", failed)
	}
}
