package locality_test

import (
	"context"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/lb/latency"
	"github.com/lodestar-rpc/lodestar/lb/locality"
	"github.com/lodestar-rpc/lodestar/registry"
)

// TestMain checks for goroutines left over, giving those that are ending
// time to end (lbtest.VerifyTestMain).
func TestMain(m *testing.M) { lbtest.VerifyTestMain(m) }

func TestParseConfig(t *testing.T) {
	t.Setenv(locality.EnvZone, "")
	t.Setenv(locality.EnvRegion, "")
	p := balancer.Get(locality.Name).(balancer.ConfigParser)
	for _, ok := range []string{`{"zone":"a"}`, `{"region":"r","overprovision":1,"minReady":2}`,
		`{"zone":"a","pick":{"lodestar_latency":{"decay":"2s"}}}`, `{"zone":"a","pick":{"round_robin":{}}}`} {
		if _, err := p.ParseConfig([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for js, want := range map[string]string{
		`{}`:                               "zone and region are both unknown",
		`{"zone":"a","overprovision":0.5}`: "overprovision 0.5: want 1 to 10",
		`{"zone":"a","minReady":-1}`:       "minReady -1",
		`{"zone":"a","pick":{"nope":{}}}`:  `unknown policy "nope"`,
		`{"zone":"a","pick":{"lodestar_latency":{"decay":"1ns"}}}`:     "decay 1ns",
		`{"zone":"a","pick":{"round_robin":{},"lodestar_latency":{}}}`: "exactly one policy",
		`{"zone":"a","pick":"round_robin"}`:                            "want {\"<policy>\"",
		`{"zones":"a"}`:                                                "unknown field",
	} {
		if _, err := p.ParseConfig([]byte(js)); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), locality.Name) {
			t.Errorf("%s: error %v, want one naming %s with %q", js, err, locality.Name, want)
		}
	}
	t.Setenv(locality.EnvZone, "zone-a")
	if _, err := p.ParseConfig([]byte(`{}`)); err != nil {
		t.Errorf("zone from %s: %v", locality.EnvZone, err)
	}
}

func TestShares(t *testing.T) {
	for _, c := range []struct {
		total, ready [3]int
		want         [3]float64
	}{
		{[3]int{3, 3, 3}, [3]int{3, 3, 3}, [3]float64{1, 0, 0}},
		{[3]int{3, 3, 3}, [3]int{2, 3, 3}, [3]float64{0.9333, 0.0667, 0}},
		{[3]int{3, 3, 3}, [3]int{0, 3, 3}, [3]float64{0, 1, 0}},
		{[3]int{3, 3, 3}, [3]int{0, 1, 3}, [3]float64{0, 0.4667, 0.5333}},
		{[3]int{0, 0, 3}, [3]int{0, 0, 3}, [3]float64{0, 0, 1}},
		{[3]int{10, 10, 0}, [3]int{1, 1, 0}, [3]float64{0.5, 0.5, 0}}, // 0.14 + 0.14, scaled up
		{[3]int{3, 3, 3}, [3]int{0, 0, 0}, [3]float64{0, 0, 0}},
	} {
		got := locality.Shares(c.total, c.ready, 1.4, 1)
		for i := range got {
			if math.Abs(got[i]-c.want[i]) > 0.001 {
				t.Errorf("total %v ready %v: shares %.4f, want %.4f", c.total, c.ready, got, c.want)
				break
			}
		}
	}
	// minReady 2: a zone with one ready instance takes nothing.
	if got := locality.Shares([3]int{1, 2, 0}, [3]int{1, 2, 0}, 1.4, 2); got != [3]float64{0, 1, 0} {
		t.Errorf("minReady 2: %v", got)
	}
	// No tier reaches minReady: the nearest with a ready instance takes all.
	if got := locality.Shares([3]int{1, 1, 0}, [3]int{1, 1, 0}, 1.4, 2); got != [3]float64{1, 0, 0} {
		t.Errorf("minReady unmet everywhere: %v", got)
	}
}

// All calls stay in the caller's zone while it has ready instances; when
// every one of them stops, calls go to the rest of the region with none
// failing, and never to the far region while the near one can take them.
func TestZoneThenRegionWithoutFailedCalls(t *testing.T) {
	r := lbtest.New(t,
		registry.Metadata{Zone: "a1", Region: "eu"}, registry.Metadata{Zone: "a1", Region: "eu"},
		registry.Metadata{Zone: "a2", Region: "eu"}, registry.Metadata{Zone: "a2", Region: "eu"},
		registry.Metadata{Zone: "b1", Region: "us"})
	conn := r.Dial(locality.Name, locality.Config{Zone: "a1", Region: "eu", Pick: lb.Child(latency.Name, nil)})
	r.WaitAll(conn, 0, 1)
	ctx := context.Background()
	c := r.Counts(ctx, conn, 2000)
	t.Logf("zone healthy: calls per server %v", c)
	if c[2]+c[3]+c[4] != 0 {
		t.Errorf("calls left the zone while it was healthy: %v", c)
	}
	if c[0] == 0 || c[1] == 0 {
		t.Errorf("the zone's instances did not share calls: %v", c)
	}

	// Callers keep calling while the zone goes down; they signal once the
	// region has answered 2000 calls after it did.
	stop := make(chan struct{})
	enough := make(chan struct{})
	var once sync.Once
	var failed, made, regionAfter atomic.Int64
	var zoneDown atomic.Bool
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				made.Add(1)
				i, err := r.Call(ctx, conn)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				if (i == 2 || i == 3) && zoneDown.Load() && regionAfter.Add(1) == 2000 {
					once.Do(func() { close(enough) })
				}
			}
		})
	}
	before := make([]int64, len(r.Srv))
	for i, s := range r.Srv {
		before[i] = s.Calls()
	}
	r.Srv[0].Stop()
	r.Srv[1].Stop()
	zoneDown.Store(true)
	timedOut := false
	select {
	case <-enough:
	case <-time.After(2 * time.Minute): // bounds a hang only
		timedOut = true
	}
	close(stop)
	wg.Wait()
	t.Logf("zone down: %d calls, %d failed; region served %d, far region %d", made.Load(), failed.Load(),
		r.Srv[2].Calls()+r.Srv[3].Calls()-before[2]-before[3], r.Srv[4].Calls()-before[4])
	if failed.Load() != 0 {
		t.Errorf("%d of %d calls failed while the zone went down (first: %v)", failed.Load(), made.Load(), firstErr.Load())
	}
	if timedOut {
		t.Errorf("the region did not answer 2000 calls within 2 minutes of the zone going down")
	}
	if r.Srv[2].Calls()+r.Srv[3].Calls()-before[2]-before[3] < 2000 {
		t.Errorf("the region did not take over the calls")
	}
	if n := r.Srv[4].Calls() - before[4]; n != 0 {
		t.Errorf("the far region got %d calls while the near one was healthy", n)
	}
}
