package wrr_test

import (
	"testing"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb/wrr"
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
		`{"outlierEjection":{"failureRate":0.25,"failureRateMinCalls":10}}`,
		`{"outlierEjection":{"failureRate":1.5}}`,
		`{"weights":[1]}`,
		`[]`, `{`, `"x"`, `1`, "\xff", `{"outlierEjection":"on"}`,
	} {
		f.Add(s)
	}
	for _, s := range append(lbtest.TrailingConfigs(), lbtest.HugeConfigs(``)...) {
		f.Add(s)
	}
	lbtest.FuzzConfig[wrr.Config](f, wrr.Name)
}
