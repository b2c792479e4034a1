package canary_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc/balancer"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb"
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
	p := balancer.Get(canary.Name).(balancer.ConfigParser)
	f.Fuzz(func(t *testing.T, js string) {
		got, err := p.ParseConfig(json.RawMessage(js))
		lbtest.CheckConfig(t, canary.Name, js, err)
		if err != nil {
			return
		}
		again := reencode(t, js)
		got2, err := p.ParseConfig(again)
		if err != nil {
			t.Fatalf("config %q accepted, but its re-encoding %s is refused: %v", js, again, err)
		}
		if !reflect.DeepEqual(got, got2) {
			t.Fatalf("config %q and its re-encoding %s parse differently", js, again)
		}
	})
}

// reencode decodes a config the parser accepted as the parser does (the
// outlierEjection field apart, the rest into Config) and marshals it.
func reencode(t *testing.T, js string) []byte {
	t.Helper()
	out := map[string]json.RawMessage{}
	rest := []byte(js)
	var top map[string]json.RawMessage
	if json.Unmarshal(rest, &top) == nil {
		if raw, ok := top[lb.EjectionField]; ok {
			var ej lb.OutlierEjection
			decodeStrict(t, raw, &ej)
			out[lb.EjectionField] = marshal(t, ej)
			delete(top, lb.EjectionField)
			rest = marshal(t, top)
		}
	}
	var cfg canary.Config
	decodeStrict(t, rest, &cfg)
	if err := json.Unmarshal(marshal(t, cfg), &out); err != nil {
		t.Fatal(err)
	}
	return marshal(t, out)
}

func decodeStrict(t *testing.T, js []byte, v any) {
	t.Helper()
	if s := bytes.TrimSpace(js); len(s) == 0 || string(s) == "null" {
		return
	}
	d := json.NewDecoder(bytes.NewReader(js))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		t.Fatalf("accepted config %q does not decode into %T: %v", js, v, err)
	}
}

func marshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
