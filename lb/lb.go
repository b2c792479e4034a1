// Package lb holds what lodestar's balancers share; the policies are its
// subpackages, one each, every one a grpc balancer selected by name:
//
//	wrr           lodestar_weighted_round_robin  smooth, by registered weight
//	leastrequest  lodestar_least_request         two random choices, fewer calls in flight
//	latency       lodestar_latency               two random choices, latency EWMA × calls in flight, errors penalised
//	hash          lodestar_consistent_hash       by a request key (context value or header)
//	locality      lodestar_locality              zone, then region, then anywhere
//	canary        lodestar_canary                by version: header pin, percentage, stable fallback
//
// Import a policy's package (for its init) and select it with
// lodestar.WithBalancer(name), lodestar.WithBalancerConfig(name, config) or
// a service config:
//
//	{"loadBalancingConfig":[{"lodestar_least_request":{}}]}
//
// # Composition
//
// locality and canary choose a subset of the instances, then hand the
// subset to a child policy named in their "pick" field, which does the
// picking inside it (round_robin when absent). Any lodestar policy can be
// the child, including another subset policy, so a canary split whose
// stable and canary sides each prefer the caller's zone and then pick by
// latency is:
//
//	{"lodestar_canary": {"version": "v2", "percent": 10,
//	  "pick": {"lodestar_locality": {"zone": "zone-a",
//	    "pick": {"lodestar_latency": {}}}}}}
//
// Each subset keeps its own statistics. In Go, build "pick" with Child.
//
// Every policy leaves out instances registered with weight 0 ("no new
// calls"), unless no ready instance would be left, and never offers
// draining ones (discovery already withholds them).
package lb

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/lodestar-rpc/lodestar/internal/quote"
)

// Child returns the "pick" value naming a child policy and its config,
// for the config structs of the subset policies. config may be nil.
func Child(name string, config any) json.RawMessage {
	if config == nil {
		config = struct{}{}
	}
	js, err := json.Marshal(map[string]any{name: config})
	if err != nil {
		// The config is one of this module's structs, which always marshal;
		// anything else shows up when the config is parsed.
		return json.RawMessage(fmt.Sprintf("{%q: %q}", name, err.Error()))
	}
	return js
}

// Duration is a time.Duration written in configs as a string such as
// "250ms" or "1.5s".
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string such as "250ms".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration %s: want a string such as \"250ms\"", quote.Bounded(string(b)))
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		if len(s) > quote.MaxPrefix {
			// time's error quotes s whole.
			return fmt.Errorf("duration %s: want a duration such as \"250ms\"", quote.Bounded(s))
		}
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}
