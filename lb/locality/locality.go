// Package locality keeps calls close: to instances in the caller's zone,
// then in its region, then anywhere, spilling over to the next tier as the
// nearer one loses instances, so that a zone outage never means failed
// calls.
//
// The caller's zone and region come from the config or, when it sets
// none, from the environment variables LODESTAR_ZONE and LODESTAR_REGION;
// an instance's come from its registration (registry.Metadata.Zone and
// Region).
//
//	{"loadBalancingConfig":[{"lodestar_locality":{"zone":"zone-a","region":"eu-west",
//	  "pick":{"lodestar_latency":{}}}}]}
//
// # Spill-over
//
// Tiers are the caller's zone, the rest of its region, and everything
// else. A tier's health is Overprovision × ready / registered (at most 1):
// with the default 1.4, a tier takes all of the traffic offered to it
// while at least 5 of every 7 of its instances (72%) are ready, and the
// share it cannot take passes to the next tier. For example, with 3
// instances in the zone and 1 of them down, the zone takes 93% of calls
// and the region the other 7%; with all 3 down, the region takes them
// all. A tier with fewer than MinReady ready instances takes nothing.
// When no tier is healthy enough to take everything, the shares are
// scaled up so that the ready instances still take every call, nearest
// tiers first. Inside a tier, the child policy in "pick" chooses
// (round_robin by default; see package lb for composition).
package locality

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"

	"google.golang.org/grpc/balancer"

	"github.com/lodestar-rpc/lodestar/lb/internal/pick"

	// The child policies a "pick" may name.
	_ "github.com/lodestar-rpc/lodestar/lb/hash"
	_ "github.com/lodestar-rpc/lodestar/lb/latency"
	_ "github.com/lodestar-rpc/lodestar/lb/leastrequest"
	_ "github.com/lodestar-rpc/lodestar/lb/wrr"
)

// Name is the policy's name in service configs.
const Name = "lodestar_locality"

// Environment variables that give the caller's zone and region when the
// config does not.
const (
	EnvZone   = "LODESTAR_ZONE"
	EnvRegion = "LODESTAR_REGION"
)

// Defaults.
const (
	DefaultOverprovision = 1.4
	DefaultMinReady      = 1
)

// Config is the policy's configuration.
type Config struct {
	// Zone and Region are the caller's; at least one must be known, here
	// or from LODESTAR_ZONE / LODESTAR_REGION.
	Zone   string `json:"zone,omitempty"`
	Region string `json:"region,omitempty"`
	// Overprovision scales a tier's ready fraction into the share of
	// traffic it keeps (default 1.4, from 1 to 10).
	Overprovision float64 `json:"overprovision,omitempty"`
	// MinReady is the fewest ready instances a tier needs to take any
	// traffic (default 1).
	MinReady int `json:"minReady,omitempty"`
	// Pick is the child policy inside a tier, as {"<name>": {<config>}};
	// build it with lb.Child. Empty means round_robin.
	Pick json.RawMessage `json:"pick,omitempty"`
}

func init() {
	pick.Register(Name, func(js json.RawMessage) (pick.Spec, error) {
		cfg := Config{}
		if err := pick.Strict(Name, js, &cfg); err != nil {
			return nil, err
		}
		return cfg.parse()
	})
}

type spec struct {
	zone, region  string
	overprovision float64
	minReady      int
	child         pick.Spec
}

func (c Config) parse() (*spec, error) {
	s := &spec{zone: c.Zone, region: c.Region, overprovision: c.Overprovision, minReady: c.MinReady}
	if s.zone == "" {
		s.zone = os.Getenv(EnvZone)
	}
	if s.region == "" {
		s.region = os.Getenv(EnvRegion)
	}
	if s.zone == "" && s.region == "" {
		return nil, fmt.Errorf("%s: the caller's zone and region are both unknown: set zone or region in the config, or %s or %s", Name, EnvZone, EnvRegion)
	}
	if s.overprovision == 0 {
		s.overprovision = DefaultOverprovision
	}
	if s.overprovision < 1 || s.overprovision > 10 || math.IsNaN(s.overprovision) {
		return nil, fmt.Errorf("%s: overprovision %v: want 1 to 10", Name, c.Overprovision)
	}
	if s.minReady == 0 {
		s.minReady = DefaultMinReady
	}
	if s.minReady < 1 {
		return nil, fmt.Errorf("%s: minReady %d: want at least 1", Name, c.MinReady)
	}
	child, err := pick.ParseChild(Name, c.Pick)
	if err != nil {
		return nil, err
	}
	s.child = child
	return s, nil
}

func (s *spec) NewPolicy() pick.Policy { return &policy{spec: s, tiers: pick.NewSubsets(s.child)} }

type policy struct {
	*spec
	tiers *pick.Subsets
}

var tierNames = [3]string{"zone", "region", "any"}

// tierOf returns 0 for the caller's zone, 1 for the rest of its region, 2
// for anywhere else.
func (s *spec) tierOf(e *pick.Endpoint) int {
	md := e.Instance.Metadata
	switch {
	case s.zone != "" && md.Zone == s.zone:
		return 0
	case s.region != "" && md.Region == s.region:
		return 1
	}
	return 2
}

func (p *policy) Picker(eps []pick.Endpoint) balancer.Picker {
	var groups [3][]pick.Endpoint
	var ready [3]int
	for _, e := range eps {
		t := p.tierOf(&e)
		groups[t] = append(groups[t], e)
		if e.Ready() {
			ready[t]++
		}
	}
	var total [3]int
	for t := range groups {
		total[t] = len(groups[t])
	}
	shares := Shares(total, ready, p.overprovision, p.minReady)
	pk := &picker{}
	for t := range groups {
		child := p.tiers.Picker(tierNames[t], groups[t])
		if child == nil {
			shares[t] = 0
		}
		pk.tiers[t] = tier{picker: child, share: shares[t]}
	}
	p.tiers.Done()
	// Cumulative shares; a tier whose child has no picker drops out.
	sum := 0.0
	for t := range pk.tiers {
		sum += pk.tiers[t].share
	}
	if sum == 0 {
		return nil
	}
	acc := 0.0
	for t := range pk.tiers {
		acc += pk.tiers[t].share / sum
		pk.tiers[t].upTo = acc
		if pk.tiers[t].share > 0 {
			pk.last = t
		}
	}
	return pk
}

// Shares returns the share of calls each tier takes (summing to 1, or all
// zero when no instance is ready), given each tier's registered and ready
// instances: the spill-over rule in the package documentation.
func Shares(total, ready [3]int, overprovision float64, minReady int) [3]float64 {
	var s [3]float64
	rem := 1.0
	for t := range s {
		if total[t] == 0 || ready[t] < minReady {
			continue
		}
		health := math.Min(1, overprovision*float64(ready[t])/float64(total[t]))
		s[t] = math.Min(rem, health)
		rem -= s[t]
	}
	if rem >= 1 {
		// No tier meets minReady: the nearest tier with a ready instance
		// takes everything rather than fail calls.
		for t := range s {
			if ready[t] > 0 {
				s[t] = 1
				break
			}
		}
		return s
	}
	for t := range s {
		s[t] /= 1 - rem
	}
	return s
}

type tier struct {
	picker balancer.Picker
	share  float64
	upTo   float64 // cumulative share
}

type picker struct {
	tiers [3]tier
	last  int // the farthest tier with a share
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	t := p.last
	if p.tiers[t].share < 1 { // more than one tier: draw
		r := rand.Float64()
		for i := range p.tiers {
			if p.tiers[i].share > 0 && r < p.tiers[i].upTo {
				t = i
				break
			}
		}
	}
	return p.tiers[t].picker.Pick(info)
}
