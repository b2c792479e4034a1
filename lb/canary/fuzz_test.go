package canary_test

import (
	"strings"
	"testing"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb/canary"
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
		`{"version":"v2"}`,
		`{"version":"v2","percent":12.5,"header":"x-ver"}`,
		`{"version":"v2","stable":"v1","percent":100,"outlierEjection":{"consecutiveFailures":3,"baseEjectionTime":"1s"}}`,
		`{"version":"v2","pick":{"lodestar_locality":{"zone":"a","pick":{"lodestar_least_request":{}}}}}`,
		`{"version":"v2","pick":{"lodestar_canary":{"version":"v3","pick":{"lodestar_consistent_hash":{"header":"x-id"}}}}}`,
		`{"version":"v2","pick":{"lodestar_latency":{"decay":"2s"}}}`,
		`{"version":"v2","pick":null}`,
		`{"version":"v2","pick":{"round_robin":{},"lodestar_latency":{}}}`,
		`{"version":"v2","pick":{"x":{}}}`,
		`{"version":"v2","pick":"round_robin"}`,
		`{"version":"v2","stable":"v2"}`,
		`{"version":"v2","percent":101}`,
		`{"version":"v2","percent":1e400}`,
		`{"version":"v2","header":"X-V"}`,
		`{"version":"v2","outlierEjection":{"failureRate":0}}`,
		`{"version":"\u0000\ud800"}`,
		`{"Version":"v2","VERSION":"v3"}`,
		`{}`, ``, `null`, `[]`, `{`, `"v2"`, `{"version":1}`, "\xff",
	} {
		f.Add(s)
	}
	for _, s := range append(lbtest.TrailingConfigs(), lbtest.HugeConfigs(`"version":"v2",`, "version", "stable", "header", "percent", "pick")...) {
		f.Add(s)
	}
	// A policy nested in itself far deeper than allowed, and just within.
	for _, levels := range []int{10, 2000} {
		f.Add(strings.Repeat(`{"version":"v2","pick":{"lodestar_canary":`, levels) + `{"version":"v2"}` + strings.Repeat(`}}`, levels))
	}
	huge := strings.Repeat("v", 100<<10)
	f.Add(`{"version":"` + huge + `","stable":"` + huge + `"}`)
	lbtest.FuzzConfig[canary.Config](f, canary.Name)
}
