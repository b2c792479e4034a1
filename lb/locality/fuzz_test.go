package locality_test

import (
	"strings"
	"testing"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb/locality"
)

// FuzzParseConfig feeds the policy's config parser, as grpc calls it with
// a service config's JSON, valid, nested, broken and huge configs. It
// never panics; every error names the policy, is short (lbtest.CheckConfig)
// and prints no control character, however large the config; a config it
// accepts is one JSON object (or null, or empty) with nothing after it,
// and, decoded into Config and marshalled again, parses to an equal
// configuration.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"zone":"a"}`,
		`{"region":"r","overprovision":1,"minReady":2}`,
		`{"zone":"a","region":"r","overprovision":10,"outlierEjection":{"disabled":true}}`,
		`{"zone":"a","pick":{"lodestar_latency":{"decay":"2s"}}}`,
		`{"zone":"a","pick":{"round_robin":{}}}`,
		`{"zone":"a","pick":{"lodestar_locality":{"version":"v2","pick":{"lodestar_locality":{"region":"r"}}}}}`,
		`{"zone":"a","pick":{"lodestar_consistent_hash":{"header":"x-id"}}}`,
		`{}`, ``, `null`,
		`{"zone":"a","overprovision":0.5}`, `{"zone":"a","overprovision":11}`, `{"zone":"a","minReady":-1}`,
		`{"zone":"a","pick":{"nope":{}}}`,
		`{"zone":"a","pick":{"lodestar_latency":{"decay":"1ns"}}}`,
		`{"zone":"a","pick":{"round_robin":{},"lodestar_latency":{}}}`,
		`{"zone":"a","pick":"round_robin"}`,
		`{"zone":"a","pick":{"lodestar_locality":{"outlierEjection":{}}}}`,
		`{"zones":"a"}`, `[]`, `{`, `"x"`, "\xff",
	} {
		f.Add(s)
	}
	for _, s := range append(lbtest.TrailingConfigs(), lbtest.HugeConfigs(`"zone":"a",`, "zone", "region", "overprovision", "minReady", "pick")...) {
		f.Add(s)
	}
	// A policy nested in itself far deeper than allowed, and just within.
	for _, levels := range []int{10, 2000} {
		f.Add(strings.Repeat(`{"zone":"a","pick":{"lodestar_locality":`, levels) + `{"zone":"a"}` + strings.Repeat(`}}`, levels))
	}
	lbtest.FuzzConfig[locality.Config](f, locality.Name)
}
