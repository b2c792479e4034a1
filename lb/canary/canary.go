// Package canary routes by instance version, for grey releases:
//
//   - a call whose metadata header (default x-lodestar-version) names a
//     version goes to the instances of that version;
//   - otherwise Percent of calls go to the canary version and the rest to
//     the stable instances: those of the Stable version when it is set,
//     else all but the canary (a version that is neither is then reached
//     only by pinning);
//   - when no instance of the wanted version is ready, the call goes to
//     the stable ones instead of failing (and to the canary ones if no
//     stable instance is ready).
//
// The split is exact, not random: of every 100 calls without a header,
// Percent go to the canary (rounded over longer runs for fractions).
//
//	{"loadBalancingConfig":[{"lodestar_canary":{"version":"v2.0.0","percent":10}}]}
//
// An instance's version is the one it registered (registry.Metadata
// .Version). Inside each version, the child policy in "pick" chooses
// (round_robin by default; see package lb for composition).
package canary

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/metadata"

	"github.com/lodestar-rpc/lodestar/internal/quote"
	"github.com/lodestar-rpc/lodestar/lb/internal/pick"

	// The child policies a "pick" may name.
	_ "github.com/lodestar-rpc/lodestar/lb/hash"
	_ "github.com/lodestar-rpc/lodestar/lb/latency"
	_ "github.com/lodestar-rpc/lodestar/lb/leastrequest"
	_ "github.com/lodestar-rpc/lodestar/lb/locality"
	_ "github.com/lodestar-rpc/lodestar/lb/wrr"
)

// Name is the policy's name in service configs.
const Name = "lodestar_canary"

// DefaultHeader is the metadata header that pins a call to a version.
const DefaultHeader = "x-lodestar-version"

// Config is the policy's configuration.
type Config struct {
	// Version is the canary version (required).
	Version string `json:"version"`
	// Stable is the stable version; empty means every version but the
	// canary.
	Stable string `json:"stable,omitempty"`
	// Percent of the calls without a version header go to the canary,
	// 0 to 100 (default 0: only pinned calls reach it).
	Percent float64 `json:"percent,omitempty"`
	// Header names the metadata header that pins a version (default
	// x-lodestar-version).
	Header string `json:"header,omitempty"`
	// Pick is the child policy inside a version, as {"<name>": {<config>}};
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
	version string
	stable  string
	percent float64
	header  string
	child   pick.Spec
}

func (c Config) parse() (*spec, error) {
	if strings.TrimSpace(c.Version) == "" {
		return nil, fmt.Errorf("%s: version: the canary version is required", Name)
	}
	if c.Percent < 0 || c.Percent > 100 || math.IsNaN(c.Percent) {
		return nil, fmt.Errorf("%s: percent %v: want 0 to 100", Name, c.Percent)
	}
	h := c.Header
	if h == "" {
		h = DefaultHeader
	}
	if h != strings.ToLower(h) || strings.HasSuffix(h, "-bin") || strings.HasPrefix(h, "grpc-") || strings.ContainsAny(h, " :") {
		return nil, fmt.Errorf("%s: header %s: want a lower-case, non-binary, non-reserved header name", Name, quote.Bounded(h))
	}
	child, err := pick.ParseChild(Name, c.Pick)
	if err != nil {
		return nil, err
	}
	if c.Stable == c.Version {
		return nil, fmt.Errorf("%s: stable version %s is the canary version", Name, quote.Bounded(c.Stable))
	}
	return &spec{version: c.Version, stable: c.Stable, percent: c.Percent, header: h, child: child}, nil
}

func (s *spec) NewPolicy() pick.Policy {
	return &policy{spec: s, stable: s.child.NewPolicy(), versions: pick.NewSubsets(s.child)}
}

type policy struct {
	*spec
	stable   pick.Policy   // the stable version, or every version but the canary
	versions *pick.Subsets // one per version, for pinned calls and the canary
	n        atomic.Uint64 // calls without a pin, across pickers: the split
}

func (p *policy) Picker(eps []pick.Endpoint) balancer.Picker {
	byVersion := map[string][]pick.Endpoint{}
	var stable []pick.Endpoint
	for _, e := range eps {
		v := e.Instance.Metadata.Version
		byVersion[v] = append(byVersion[v], e)
		if v != p.version && (p.spec.stable == "" || v == p.spec.stable) {
			stable = append(stable, e)
		}
	}
	pk := &picker{spec: p.spec, pinned: make(map[string]balancer.Picker, len(byVersion)), n: &p.n}
	if len(stable) > 0 {
		pk.stable = p.stable.Picker(stable)
	}
	for v, group := range byVersion {
		if child := p.versions.Picker(v, group); child != nil {
			pk.pinned[v] = child
		}
	}
	p.versions.Done()
	pk.canary = pk.pinned[p.version]
	if pk.stable == nil && pk.canary == nil {
		return nil
	}
	return pk
}

type picker struct {
	*spec
	stable, canary balancer.Picker // nil when none is ready
	pinned         map[string]balancer.Picker
	n              *atomic.Uint64 // the policy's: a new picker does not restart the split
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	if md, ok := metadata.FromOutgoingContext(info.Ctx); ok {
		if v := md.Get(p.header); len(v) > 0 {
			if child := p.pinned[v[0]]; child != nil {
				return child.Pick(info)
			}
			return p.fallback().Pick(info) // the pinned version is not here
		}
	}
	if p.canary != nil && p.percent > 0 {
		// Call n goes to the canary when the running total of percent
		// crosses a whole hundred: exactly percent% over every 100 calls.
		n := p.n.Add(1)
		if math.Floor(float64(n)*p.percent/100) > math.Floor(float64(n-1)*p.percent/100) {
			return p.canary.Pick(info)
		}
	}
	return p.fallback().Pick(info)
}

// fallback is the stable side, or the canary when no stable instance is
// ready.
func (p *picker) fallback() balancer.Picker {
	if p.stable != nil {
		return p.stable
	}
	return p.canary
}
