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
	"bytes"
	"container/heap"
	"encoding/json"
	"fmt"
	"sync"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/serviceconfig"

	"github.com/lodestar-rpc/lodestar/discovery"
)

// Name is the policy's name in service configs.
const Name = "lodestar_weighted_round_robin"

func init() { balancer.Register(builder{}) }

// Config is the policy's configuration. It has no fields yet; unknown
// fields are refused.
type Config struct {
	serviceconfig.LoadBalancingConfig `json:"-"`
}

type builder struct{}

func (builder) Name() string { return Name }

func (builder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	cfg := &Config{}
	if len(bytes.TrimSpace(js)) == 0 {
		return cfg, nil
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return nil, fmt.Errorf("%s: config %s: %v", Name, js, err)
	}
	return cfg, nil
}

func (builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	b := &wrrBalancer{ClientConn: cc}
	b.child = endpointsharding.NewBalancer(b, opts, balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return b
}

// wrrBalancer lets endpointsharding keep one pick_first child per instance
// and replaces its picker with a weighted one over the ready children.
type wrrBalancer struct {
	balancer.ClientConn // embedded to intercept UpdateState
	child               balancer.Balancer
}

func (b *wrrBalancer) UpdateClientConnState(ccs balancer.ClientConnState) error {
	return b.child.UpdateClientConnState(balancer.ClientConnState{
		ResolverState: pickfirst.EnableHealthListener(ccs.ResolverState),
	})
}

func (b *wrrBalancer) ResolverError(err error) { b.child.ResolverError(err) }

func (b *wrrBalancer) UpdateSubConnState(sc balancer.SubConn, st balancer.SubConnState) {
	b.child.UpdateSubConnState(sc, st)
}

func (b *wrrBalancer) Close() { b.child.Close() }

func (b *wrrBalancer) ExitIdle() { b.child.ExitIdle() }

// UpdateState receives endpointsharding's state and publishes a weighted
// picker over the ready instances.
func (b *wrrBalancer) UpdateState(state balancer.State) {
	var ready []entry
	zero := 0
	for _, c := range endpointsharding.ChildStatesFromPicker(state.Picker) {
		if c.State.ConnectivityState != connectivity.Ready {
			continue
		}
		w := discovery.Weight(c.Endpoint)
		if w <= 0 {
			zero++
			continue
		}
		ready = append(ready, entry{picker: c.State.Picker, weight: float64(w)})
	}
	if len(ready) == 0 && zero > 0 {
		// Every ready instance has weight 0: share equally rather than fail.
		for _, c := range endpointsharding.ChildStatesFromPicker(state.Picker) {
			if c.State.ConnectivityState == connectivity.Ready {
				ready = append(ready, entry{picker: c.State.Picker, weight: 1})
			}
		}
	}
	if len(ready) == 0 {
		b.ClientConn.UpdateState(state) // nothing ready: endpointsharding's picker queues or fails
		return
	}
	b.ClientConn.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: newPicker(ready)})
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
