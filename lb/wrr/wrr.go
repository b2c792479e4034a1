// Package wrr is a smooth weighted round-robin balancer: each instance gets
// a share of new calls proportional to the weight it registered
// (registry.Metadata.Weight, carried by package discovery), interleaved
// rather than in bursts. A weight change in etcd applies without
// reconnecting. Weight 0 means "no new calls", unless every ready instance
// has weight 0, in which case they share calls equally rather than fail.
//
// Select it by service config:
//
//	{"loadBalancingConfig":[{"lodestar_weighted_round_robin":{}}]}
//
// or with lodestar.WithBalancer(wrr.Name). grpc's own weighted_round_robin
// takes weights only from ORCA load reports; this one takes the static
// weights lodestar registers.
package wrr

import (
	"container/heap"
	"encoding/json"
	"sync"

	"google.golang.org/grpc/balancer"

	"github.com/lodestar-rpc/lodestar/lb/internal/pick"
)

// Name is the policy's name in service configs.
const Name = "lodestar_weighted_round_robin"

func init() {
	pick.Register(Name, func(js json.RawMessage) (pick.Spec, error) {
		var cfg Config
		if err := pick.Strict(Name, js, &cfg); err != nil {
			return nil, err
		}
		return spec{}, nil
	})
}

// Config is the policy's configuration. It has no fields yet; unknown
// fields are refused.
type Config struct{}

type spec struct{}

func (spec) NewPolicy() pick.Policy { return policy{} }

type policy struct{}

// Picker returns a weighted picker over the ready instances. Weight-0
// instances have already been left out by the frame, unless every ready
// instance has weight 0, in which case they share calls equally.
func (policy) Picker(eps []pick.Endpoint) balancer.Picker {
	var ready []entry
	for _, e := range eps {
		if !e.Ready() {
			continue
		}
		w := float64(e.Instance.Metadata.Weight)
		if w <= 0 {
			w = 1
		}
		ready = append(ready, entry{picker: e.Picker, weight: w})
	}
	if len(ready) == 0 {
		return nil
	}
	return newPicker(ready)
}

// entry is one ready instance in the schedule.
type entry struct {
	picker   balancer.Picker
	weight   float64
	deadline float64 // virtual time of its next turn
	seq      int     // ties broken by order, for determinism
}

// picker is an earliest-deadline-first schedule: each instance's turns are
// 1/weight apart in virtual time, so over any window the shares follow the
// weights and turns interleave. A pick is O(log n).
type picker struct {
	mu sync.Mutex
	h  schedule
}

func newPicker(ready []entry) *picker {
	p := &picker{h: make(schedule, len(ready))}
	for i := range ready {
		e := ready[i]
		e.deadline, e.seq = 0.5/e.weight, i // half a turn in: the tightest interleaving
		p.h[i] = &e
	}
	heap.Init(&p.h)
	return p
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	p.mu.Lock()
	e := p.h[0]
	e.deadline += 1 / e.weight
	heap.Fix(&p.h, 0)
	p.mu.Unlock()
	return e.picker.Pick(info)
}

type schedule []*entry

func (s schedule) Len() int { return len(s) }
func (s schedule) Less(i, j int) bool {
	if s[i].deadline != s[j].deadline {
		return s[i].deadline < s[j].deadline
	}
	return s[i].seq < s[j].seq
}
func (s schedule) Swap(i, j int) { s[i], s[j] = s[j], s[i] }
func (s *schedule) Push(x any)   { *s = append(*s, x.(*entry)) }
func (s *schedule) Pop() any {
	old := *s
	e := old[len(old)-1]
	*s = old[:len(old)-1]
	return e
}
