package leastrequest_test

import (
	"testing"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb/leastrequest"
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
		``, `{}`, `null`, `{"choices":3}`, `{"choices":10}`,
		`{"choices":2,"outlierEjection":{"consecutiveFailures":3}}`,
		`{"choices":1}`, `{"choices":11}`, `{"choices":-2}`, `{"choices":2.5}`, `{"choices":1e3}`,
		`{"choices":99999999999999999999}`, `{"choices":"2"}`, `{"choise":2}`,
		`[]`, `{`, `"x"`, "\xff",
	} {
		f.Add(s)
	}
	for _, s := range append(lbtest.TrailingConfigs(), lbtest.HugeConfigs(``, "choices")...) {
		f.Add(s)
	}
	lbtest.FuzzConfig[leastrequest.Config](f, leastrequest.Name)
}
