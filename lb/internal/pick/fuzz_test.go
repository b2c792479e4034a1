package pick

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc/connectivity"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb"
)

// FuzzParseChild feeds the parser of a nesting policy's "pick" field: it
// never panics, every error starts with the parent policy and is short
// however large the input (lbtest.CheckConfig), a child it accepts is one
// JSON object (or null, or empty) and builds a policy that makes a
// picker, and parses again, from its name and an empty config
// (round_robin has no fields), to the same spec.
func FuzzParseChild(f *testing.F) {
	for _, s := range []string{
		``, `null`, `{"round_robin":{}}`, `{"round_robin":null}`, `{"round_robin":{"x":1}}`,
		`{"nope":{}}`, `{}`, `[1]`, `{"round_robin":{},"round_robin":{}}`,
		`{"round_robin":{},"other":{}}`, `{"round_robin":[]}`, `"round_robin"`, `{`, "\xff",
	} {
		f.Add(s)
	}
	for _, s := range lbtest.TrailingConfigs() {
		f.Add(s)
		f.Add(`{"round_robin":` + s + `}`)
	}
	for _, s := range lbtest.HugeConfigs(``) {
		f.Add(s)
		f.Add(`{"round_robin":` + s + `}`)
	}
	const parent = "lodestar_fuzz_parent"
	f.Fuzz(func(t *testing.T, js string) {
		spec, err := ParseChild(parent, json.RawMessage(js))
		lbtest.CheckConfig(t, parent, js, err)
		if err != nil {
			if !strings.HasPrefix(err.Error(), parent+": ") {
				t.Fatalf("child %q: error %q does not start with the parent %s", js, err, parent)
			}
			return
		}
		if spec == nil {
			t.Fatalf("child %q: accepted without a spec", js)
		}
		eps := []Endpoint{ep("a", 100, connectivity.Ready), ep("b", 0, connectivity.Connecting)}
		eps[0].Picker = &fakePicker{}
		if spec.NewPolicy().Picker(eps) == nil {
			t.Fatalf("child %q: no picker with a ready instance", js)
		}
		again, err := ParseChild(parent, json.RawMessage(`{"`+RoundRobin+`":{}}`))
		if err != nil || !reflect.DeepEqual(spec, again) {
			t.Fatalf("child %q parses to %#v, its re-encoding to %#v, %v", js, spec, again, err)
		}
	})
}

// FuzzParseConfig feeds a top-level policy's ParseConfig, which takes the
// outlierEjection field out before the policy's own parser sees the rest:
// it never panics, every error names the policy and is short however
// large the config (lbtest.CheckConfig), an accepted config is one JSON
// object (or null, or empty) with nothing after it and has
// its ejection defaults applied and in range, and the config marshalled
// again parses to an equal configuration.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `null`,
		`{"outlierEjection":{"consecutiveFailures":3,"baseEjectionTime":"1s"}}`,
		`{"outlierEjection":{"disabled":true}}`,
		`{"outlierEjection":{"disabled":false,"consecutiveFailures":1,"baseEjectionTime":"1ms","maxEjectionTime":"1ms","maxEjectionPercent":100,"failureRate":1,"failureRateMinCalls":1}}`,
		`{"outlierEjection":null}`,
		`{"outlierEjection":{"maxEjectionPercent":101}}`,
		`{"outlierEjection":{"baseEjectionTime":"1m","maxEjectionTime":"1s"}}`,
		`{"outlierEjection":{"baseEjectionTime":"-1s"}}`,
		`{"outlierEjection":{"failureRate":1e-300}}`,
		`{"outlierEjection":{"after":3}}`,
		`{"outlierEjection":{},"outlierEjection":{"disabled":true}}`,
		`{"outlierEjection":[]}`, `{"OutlierEjection":{}}`, `{"weights":[1]}`,
		`[]`, `{`, `"x"`, `1`, "\xff", ` {"outlierEjection":{}} `,
	} {
		f.Add(s)
	}
	for _, s := range append(lbtest.TrailingConfigs(), lbtest.HugeConfigs(``)...) {
		f.Add(s)
	}
	const name = "lodestar_fuzz_policy"
	b := builder{name: name, parse: RoundRobinParser(name)}
	f.Fuzz(func(t *testing.T, js string) {
		got, err := b.ParseConfig(json.RawMessage(js))
		lbtest.CheckConfig(t, name, js, err)
		if err != nil {
			return
		}
		cfg := got.(*lbConfig)
		if d, err := cfg.eject.WithDefaults(); err != nil || d != cfg.eject {
			t.Fatalf("config %q: ejection %+v is not complete and in range (%+v, %v)", js, cfg.eject, d, err)
		}
		again, err := json.Marshal(map[string]lb.OutlierEjection{lb.EjectionField: cfg.eject})
		if err != nil {
			t.Fatal(err)
		}
		got2, err := b.ParseConfig(again)
		if err != nil || !reflect.DeepEqual(got, got2) {
			t.Fatalf("config %q parses to %+v, its re-encoding %s to %+v, %v", js, got, again, got2, err)
		}
	})
}
