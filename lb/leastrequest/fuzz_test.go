package leastrequest_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"google.golang.org/grpc/balancer"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb"
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
	p := balancer.Get(leastrequest.Name).(balancer.ConfigParser)
	f.Fuzz(func(t *testing.T, js string) {
		got, err := p.ParseConfig(json.RawMessage(js))
		lbtest.CheckConfig(t, leastrequest.Name, js, err)
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
	var cfg leastrequest.Config
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
