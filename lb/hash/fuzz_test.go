package hash_test

import (
	"testing"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb/hash"
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
		``, `{}`, `null`, `{"header":"x-user-id"}`, `{"tableSize":65537}`, `{"tableSize":7}`,
		`{"header":"x.id_2","tableSize":16777213,"outlierEjection":{"consecutiveFailures":2}}`,
		`{"header":"X-User"}`, `{"header":"x-id-bin"}`, `{"header":"grpc-timeout"}`, `{"header":":path"}`,
		`{"header":"x id"}`, `{"header":"x-\u00e9"}`, `{"tableSize":65536}`, `{"tableSize":16777259}`,
		`{"tableSize":-7}`, `{"key":"x"}`, `[]`, `{`, `"x"`, "\xff",
	} {
		f.Add(s)
	}
	for _, s := range append(lbtest.TrailingConfigs(), lbtest.HugeConfigs(``, "header", "tableSize")...) {
		f.Add(s)
	}
	lbtest.FuzzConfig[hash.Config](f, hash.Name)
}
