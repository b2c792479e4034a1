// Package leastrequest sends each call to the less busy of a few
// instances drawn at random ("power of two choices"): the one with fewer
// calls in flight from this client. It follows load at once, without the
// herd that always picking the least busy instance of all causes.
//
//	{"loadBalancingConfig":[{"lodestar_least_request":{"choices":2}}]}
//
// grpc's least_request_experimental does the same over grpc's own
// endpoints; this one also honours lodestar's weight 0 ("no new calls"),
// counts calls per instance across address-list updates, and nests inside
// the locality and canary policies. The README compares the two.
package leastrequest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync/atomic"

	"google.golang.org/grpc/balancer"

	"github.com/lodestar-rpc/lodestar/lb/internal/pick"
)

// Name is the policy's name in service configs.
const Name = "lodestar_least_request"

// Config is the policy's configuration.
type Config struct {
	// Choices is how many instances are drawn for each call, 2 to 10
	// (default 2).
	Choices int `json:"choices,omitempty"`
}

func init() {
	pick.Register(Name, func(js json.RawMessage) (pick.Spec, error) {
		cfg := Config{}
		if err := pick.Strict(Name, js, &cfg); err != nil {
			return nil, err
		}
		if cfg.Choices == 0 {
			cfg.Choices = 2
		}
		if cfg.Choices < 2 || cfg.Choices > 10 {
			return nil, fmt.Errorf("%s: choices %d: want 2 to 10", Name, cfg.Choices)
		}
		return cfg, nil
	})
}

// NewPolicy implements the frame's Spec.
func (c Config) NewPolicy() pick.Policy { return &policy{choices: c.Choices} }

type policy struct {
	choices  int
	inflight pick.Keyed[atomic.Int64]
}

func (p *policy) Picker(eps []pick.Endpoint) balancer.Picker {
	ready := pick.ReadyOnly(eps)
	if len(ready) == 0 {
		return nil
	}
	counts := p.inflight.Sync(eps, func() *atomic.Int64 { return new(atomic.Int64) })
	pk := &picker{choices: min(p.choices, len(ready))}
	for i, e := range eps {
		if e.Ready() {
			pk.ends = append(pk.ends, end{picker: e.Picker, inflight: counts[i]})
		}
	}
	return pk
}

type end struct {
	picker   balancer.Picker
	inflight *atomic.Int64
}

type picker struct {
	choices int
	ends    []end
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	n := len(p.ends)
	bi := rand.IntN(n)
	if p.choices == 2 && n > 1 {
		// The common case: the second draw is among the others.
		if j := (bi + 1 + rand.IntN(n-1)) % n; p.ends[j].inflight.Load() < p.ends[bi].inflight.Load() {
			bi = j
		}
	} else {
		for range p.choices - 1 { // draws may repeat, as in grpc's policy
			if j := rand.IntN(n); p.ends[j].inflight.Load() < p.ends[bi].inflight.Load() {
				bi = j
			}
		}
	}
	best := &p.ends[bi]
	res, err := best.picker.Pick(info)
	if err != nil {
		return res, err
	}
	best.inflight.Add(1)
	return pick.OnDone(res, func(balancer.DoneInfo) { best.inflight.Add(-1) }), nil
}
