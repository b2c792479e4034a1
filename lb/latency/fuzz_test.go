package latency_test

import (
	"testing"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb/latency"
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
		``, `{}`, `null`,
		`{"decay":"2s","probeInterval":"100ms","slowFactor":3}`,
		`{"decay":"10ms","probeInterval":"10ms","slowFactor":1.5,"outlierEjection":{"disabled":true}}`,
		`{"decay":"2562047h47m16.854775807s"}`,
		`{"decay":"-1s"}`, `{"decay":"1ms"}`, `{"decay":"soon"}`, `{"decay":5}`, `{"decay":null}`,
		`{"probeInterval":"1ns"}`, `{"slowFactor":1}`, `{"slowFactor":1e308}`, `{"slowFactor":-0}`,
		`{"slow":2}`, `[]`, `{`, `"x"`, "\xff",
	} {
		f.Add(s)
	}
	for _, s := range append(lbtest.TrailingConfigs(), lbtest.HugeConfigs(``, "decay", "probeInterval", "slowFactor")...) {
		f.Add(s)
	}
	lbtest.FuzzConfig[latency.Config](f, latency.Name)
}
