package roundrobin_test

import (
	"testing"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb/roundrobin"
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
		`{"outlierEjection":{"consecutiveFailures":3,"baseEjectionTime":"1s"}}`,
		`{"outlierEjection":{"disabled":true}}`,
		`{"outlierEjection":{"maxEjectionPercent":100,"failureRate":1,"failureRateMinCalls":1,"maxEjectionTime":"2562047h47m16.854775807s"}}`,
		`{"outlierEjection":null}`,
		`{"outlierEjection":{"maxEjectionPercent":101}}`,
		`{"outlierEjection":{"baseEjectionTime":"1m","maxEjectionTime":"1s"}}`,
		`{"outlierEjection":{"baseEjectionTime":5}}`,
		`{"outlierEjection":{"after":3}}`,
		`{"outlierEjection":{},"outlierEjection":{"disabled":true}}`,
		`{"OutlierEjection":{}}`,
		`{"weights":[1]}`,
		`[]`, `{`, `"x"`, `1`, "\xff", `{"outlierEjection":[]}`,
	} {
		f.Add(s)
	}
	for _, s := range append(lbtest.TrailingConfigs(), lbtest.HugeConfigs(``)...) {
		f.Add(s)
	}
	lbtest.FuzzConfig[roundrobin.Config](f, roundrobin.Name)
}
