package canary_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/metadata"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/lb/canary"
	"github.com/lodestar-rpc/lodestar/lb/latency"
	"github.com/lodestar-rpc/lodestar/lb/leastrequest"
	"github.com/lodestar-rpc/lodestar/lb/locality"
	"github.com/lodestar-rpc/lodestar/registry"
)

// TestMain checks for goroutines left over, giving those that are ending
// time to end (lbtest.VerifyTestMain).
func TestMain(m *testing.M) { lbtest.VerifyTestMain(m) }

func TestParseConfig(t *testing.T) {
	p := balancer.Get(canary.Name).(balancer.ConfigParser)
	for _, ok := range []string{`{"version":"v2"}`, `{"version":"v2","percent":12.5,"header":"x-ver"}`,
		`{"version":"v2","pick":{"lodestar_locality":{"zone":"a","pick":{"lodestar_least_request":{}}}}}`} {
		if _, err := p.ParseConfig([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for js, want := range map[string]string{
		`{}`:                                               "version: the canary version is required",
		`{"version":"v2","percent":101}`:                   "percent 101: want 0 to 100",
		`{"version":"v2","percent":-1}`:                    "percent -1",
		`{"version":"v2","header":"X-V"}`:                  `header "X-V"`,
		`{"version":"v2","pick":{"x":{}}}`:                 `unknown policy "x"`,
		`{"version":"v2","pick":{"lodestar_locality":{}}}`: "lodestar_locality: the caller's zone",
		`{"version":"v2","stable":"v2"}`:                   "stable version \"v2\" is the canary",
		`{"version":"v2","weight":1}`:                      "unknown field",
	} {
		if _, err := p.ParseConfig([]byte(js)); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), canary.Name) {
			t.Errorf("%s: error %v, want one naming %s with %q", js, err, canary.Name, want)
		}
	}
}

func pin(v string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), canary.DefaultHeader, v)
}

func TestPinSplitAndFallback(t *testing.T) {
	t.Setenv("LODESTAR_ZONE", "")
	r := lbtest.New(t,
		registry.Metadata{Version: "v1"}, registry.Metadata{Version: "v1"}, registry.Metadata{Version: "v1"},
		registry.Metadata{Version: "v2"}, registry.Metadata{Version: "v3"})
	conn := r.Dial(canary.Name, canary.Config{Version: "v2", Stable: "v1", Percent: 10, Pick: lb.Child(leastrequest.Name, nil)})
	r.WaitAll(conn, 0, 1, 2) // stable instances ready
	for _, v := range []string{"v2", "v3"} {
		deadline := time.Now().Add(30 * time.Second) // bounds a hang only
		for {
			i, err := r.Call(pin(v), conn)
			if err != nil {
				t.Fatal(err)
			}
			if (v == "v2" && i == 3) || (v == "v3" && i == 4) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pinned %s never reached its instance", v)
			}
		}
	}

	// Pinned calls go to their version only.
	for v, want := range map[string][]int{"v1": {0, 1, 2}, "v2": {3}, "v3": {4}, "v9": {0, 1, 2}} {
		c := r.Counts(pin(v), conn, 300)
		for i, n := range c {
			if n > 0 && !contains(want, i) {
				t.Errorf("pinned %s: server %d (%s) got %d calls; calls per server %v", v, i, versionOf(i), n, c)
			}
		}
	}

	// 10% of the others go to the canary, the rest to stable (not v3).
	c := r.Counts(context.Background(), conn, 10000)
	share := float64(c[3]) / 10000
	t.Logf("10%% split over 10,000 calls: calls per server %v, canary share %.4f", c, share)
	if math.Abs(share-0.10) > 0.02 {
		t.Errorf("canary share %.4f, want 0.10 ± 0.02", share)
	}
	if c[4] != 0 {
		t.Errorf("unpinned calls reached v3: %v", c)
	}

	// The canary goes away: every call succeeds on stable.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Reg.Deregister(ctx, lbtest.Service, r.Srv[3].Addr); err != nil {
		t.Fatal(err)
	}
	r.Srv[3].Stop()
	for _, ctx := range []context.Context{context.Background(), pin("v2")} {
		c := r.Counts(ctx, conn, 1000) // Counts fails the test on any failed call
		if c[3] != 0 || c[4] != 0 || c[0]+c[1]+c[2] != 1000 {
			t.Errorf("without a canary: calls per server %v, want all on stable", c)
		}
	}
}

func contains(s []int, x int) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

func versionOf(i int) string { return [...]string{"v1", "v1", "v1", "v2", "v3"}[i] }

// Composition: a 50% canary split whose two sides each keep to the
// caller's zone and pick by latency inside it.
func TestNestedLocalityThenLatency(t *testing.T) {
	r := lbtest.New(t,
		registry.Metadata{Version: "v1", Zone: "a"}, registry.Metadata{Version: "v1", Zone: "b"},
		registry.Metadata{Version: "v2", Zone: "a"}, registry.Metadata{Version: "v2", Zone: "b"})
	conn := r.Dial(canary.Name, canary.Config{Version: "v2", Percent: 50,
		Pick: lb.Child(locality.Name, locality.Config{Zone: "a", Pick: lb.Child(latency.Name, nil)})})
	r.WaitAll(conn, 0, 2)
	c := r.Counts(context.Background(), conn, 2000)
	t.Logf("calls per server (v1/a, v1/b, v2/a, v2/b): %v", c)
	if c[1] != 0 || c[3] != 0 {
		t.Errorf("calls left zone a: %v", c)
	}
	if c[0] != 1000 || c[2] != 1000 {
		t.Errorf("split %d/%d, want 1000/1000", c[0], c[2])
	}
}
