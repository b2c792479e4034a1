package pick

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"

	"github.com/lodestar-rpc/lodestar/registry"
)

func ep(addr string, weight int, st connectivity.State) Endpoint {
	return Endpoint{Addr: addr, State: st, Instance: registry.Instance{Addr: addr, Metadata: registry.Metadata{Weight: weight}}}
}

func addrs(eps []Endpoint) string {
	var s []string
	for _, e := range eps {
		s = append(s, e.Addr)
	}
	return strings.Join(s, ",")
}

func TestWithoutZeroWeight(t *testing.T) {
	r, c := connectivity.Ready, connectivity.Connecting
	for _, tc := range []struct {
		in   []Endpoint
		want string
	}{
		{[]Endpoint{ep("a", 0, r), ep("b", 100, r)}, "b"},
		{[]Endpoint{ep("a", 0, r), ep("b", 100, c)}, "a,b"}, // no ready positive: keep all
		{[]Endpoint{ep("a", 0, r), ep("b", 0, r)}, "a,b"},
		{[]Endpoint{ep("a", 5, r), ep("b", 100, c)}, "a,b"},
	} {
		if got := addrs(WithoutZeroWeight(tc.in)); got != tc.want {
			t.Errorf("%s: got %s, want %s", addrs(tc.in), got, tc.want)
		}
	}
}

func TestParseChild(t *testing.T) {
	if s, err := ParseChild("p", nil); err != nil || s == nil {
		t.Errorf("empty: %v, %v", s, err)
	}
	if _, err := ParseChild("p", json.RawMessage(`{"round_robin":{}}`)); err != nil {
		t.Error(err)
	}
	for js, want := range map[string]string{
		`{"round_robin":{"x":1}}`: `p: pick: round_robin: config {"x":1}: json: unknown field "x"`,
		`{"nope":{}}`:             `p: pick: unknown policy "nope" (known: round_robin`,
		`{}`:                      "want exactly one policy, got 0",
		`[1]`:                     `want {"<policy>": {...}}`,
	} {
		if _, err := ParseChild("p", json.RawMessage(js)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", js, err, want)
		}
	}
}

type fakePicker struct{ picks int }

func (f *fakePicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	f.picks++
	return balancer.PickResult{}, nil
}

func TestOnDoneChains(t *testing.T) {
	var order []string
	res := balancer.PickResult{Done: func(balancer.DoneInfo) { order = append(order, "child") }}
	res = OnDone(res, func(balancer.DoneInfo) { order = append(order, "ours") })
	res.Done(balancer.DoneInfo{})
	if strings.Join(order, ",") != "child,ours" {
		t.Errorf("order %v", order)
	}
	res = OnDone(balancer.PickResult{}, func(balancer.DoneInfo) { order = append(order, "alone") })
	res.Done(balancer.DoneInfo{})
	if order[len(order)-1] != "alone" {
		t.Errorf("order %v", order)
	}
}

func TestKeyedKeepsAndForgets(t *testing.T) {
	var k Keyed[atomic.Int64]
	fresh := func() *atomic.Int64 { return new(atomic.Int64) }
	first := k.Sync([]Endpoint{{Addr: "a"}, {Addr: "b"}}, fresh)
	first[0].Store(7)
	second := k.Sync([]Endpoint{{Addr: "b"}, {Addr: "a"}}, fresh)
	if second[1] != first[0] || second[1].Load() != 7 {
		t.Error("a's counter not kept across syncs")
	}
	k.Sync([]Endpoint{{Addr: "b"}}, fresh)
	third := k.Sync([]Endpoint{{Addr: "a"}}, fresh)
	if third[0] == first[0] {
		t.Error("a's counter kept after a was gone")
	}
}

func TestRoundRobinOverReadyOnly(t *testing.T) {
	eps := []Endpoint{ep("a", 1, connectivity.Ready), ep("b", 1, connectivity.TransientFailure), ep("c", 1, connectivity.Ready)}
	fakes := []*fakePicker{{}, {}, {}}
	for i := range eps {
		eps[i].Picker = fakes[i]
	}
	p := rrPolicy{}.Picker(eps)
	for range 10 {
		p.Pick(balancer.PickInfo{})
	}
	if fakes[0].picks != 5 || fakes[1].picks != 0 || fakes[2].picks != 5 {
		t.Errorf("picks a=%d b=%d c=%d, want 5, 0, 5", fakes[0].picks, fakes[1].picks, fakes[2].picks)
	}
	if (rrPolicy{}).Picker(eps[1:2]) != nil {
		t.Error("a picker over no ready instance")
	}
}
