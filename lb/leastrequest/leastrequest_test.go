package leastrequest_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/balancer"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb/leastrequest"
	"github.com/lodestar-rpc/lodestar/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseConfig(t *testing.T) {
	p := balancer.Get(leastrequest.Name).(balancer.ConfigParser)
	for _, ok := range []string{``, `{}`, `{"choices":3}`} {
		if _, err := p.ParseConfig([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for js, want := range map[string]string{
		`{"choices":1}`:  "choices 1: want 2 to 10",
		`{"choices":11}`: "choices 11",
		`{"choise":2}`:   "unknown field",
		`[]`:             "cannot unmarshal",
	} {
		if _, err := p.ParseConfig([]byte(js)); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), leastrequest.Name) {
			t.Errorf("%s: error %v, want one naming %s and %q", js, err, leastrequest.Name, want)
		}
	}
}

// A slow instance holds its calls longer, so under concurrent load it has
// more in flight and gets fewer new calls than the others; round robin
// would give it a third.
func TestSlowInstanceGetsFewerCalls(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	r.Srv[0].SetDelay(50 * time.Millisecond)
	for _, s := range r.Srv[1:] {
		s.SetDelay(time.Millisecond)
	}
	conn := r.Dial(leastrequest.Name, leastrequest.Config{})
	r.WaitAll(conn, 0, 1, 2)

	const callers, each = 16, 100
	counts := make([]int, len(r.Srv))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			c := r.Counts(context.Background(), conn, each)
			mu.Lock()
			for i := range c {
				counts[i] += c[i]
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	share := float64(counts[0]) / (callers * each)
	t.Logf("calls per server %v; slow share %.3f", counts, share)
	if share > 0.15 {
		t.Errorf("slow instance got %.3f of calls, want under 0.15 (round robin gives 0.33)", share)
	}
}

// Weight 0 means no new calls, for this policy as for the others.
func TestWeightZeroGetsNoCalls(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Reg.SetWeight(ctx, lbtest.Service, r.Srv[0].Addr, 0); err != nil {
		t.Fatal(err)
	}
	conn := r.Dial(leastrequest.Name, nil)
	r.WaitAll(conn, 1)
	// The weight change may reach the picker after the first calls.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := r.Counts(ctx, conn, 200)
		if c[0] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("weight-0 instance still gets calls: %v", c)
		}
	}
}
