package lbtest

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc/balancer"

	"github.com/lodestar-rpc/lodestar/lb"
)

// MaxConfigError is the longest error a policy's config parser may
// return, however large the config it was given.
const MaxConfigError = 1024

// hugeSize is the size of the strings, numbers and garbage in HugeConfigs.
const hugeSize = 100 << 10

// HugeConfigs returns seeds for a policy's config fuzz target that hold
// about 100 KB each: a huge unknown field, each of fields holding a huge
// string, a huge number and a huge upper-case string with control
// characters, a huge outlierEjection duration, field and number, a huge
// child policy name, data after a config, and nesting far deeper than a
// parser allows. within is written at the start of every object that
// holds the fields (e.g. `"version":"v2",` for a policy that requires a
// version), so that the parser reaches them.
func HugeConfigs(within string, fields ...string) []string {
	str := strings.Repeat("a", hugeSize)
	num := "1" + strings.Repeat("0", hugeSize)
	ctl := strings.Repeat("A\x1b[2J\x07\t\xff", hugeSize/8)
	obj := func(body string) string { return "{" + within + body + "}" }
	out := []string{
		obj(`"` + str + `":1`),
		obj(`"` + ctl + `":1`),
		obj(`"outlierEjection":{"baseEjectionTime":"` + str + `"}`),
		obj(`"outlierEjection":{"maxEjectionTime":` + num + `}`),
		obj(`"outlierEjection":{"consecutiveFailures":` + num + `}`),
		obj(`"outlierEjection":{"` + str + `":1}`),
		obj(`"outlierEjection":"` + str + `"`),
		obj(`"pick":{"` + str + `":{}}`),
		obj(`"pick":{"` + ctl + `":{}}`),
		obj(`"pick":"` + str + `"`),
		`"` + str + `"`,
		num,
		"null " + str,
		obj("") + " " + str,
		obj("") + strings.Repeat(" {}", hugeSize/3),
		strings.Repeat("[", hugeSize),
		strings.Repeat(`{"a":`, hugeSize/5) + "1" + strings.Repeat("}", hugeSize/5),
		strings.Repeat(`{"pick":`, hugeSize/8) + "{}" + strings.Repeat("}", hugeSize/8),
	}
	for _, f := range fields {
		out = append(out,
			obj(`"`+f+`":"`+str+`"`),
			obj(`"`+f+`":"`+ctl+`"`),
			obj(`"`+f+`":`+num),
			obj(`"`+f+`":-`+num),
			obj(`"`+f+`":`+num+`e-99999`),
			obj(`"`+f+`":["`+str+`"]`),
		)
	}
	return out
}

// TrailingConfigs returns seeds for a policy's config fuzz target that
// are not one JSON object or null: data after a value, other top-level
// values, and white space JSON does not allow.
func TrailingConfigs() []string {
	return []string{
		`null garbage`, `null null`, `null {}`, `{} {}`, `{}x`, `{}}`, `{} null`,
		`{"outlierEjection":{}} {}`, `{"outlierEjection":{}}]`, " null\n\t", "\u00a0null", "{}\u00a0",
		"\u2028{}", `[]`, `3`, `true`, `"x"`, `[{}]`,
	}
}

// CheckConfig checks what every policy's config parser promises whatever
// it is given: an error names the policy, holds no control character and
// is at most MaxConfigError bytes; an accepted config is empty, null, or
// one JSON object with nothing after it.
func CheckConfig(t testing.TB, name, js string, err error) {
	t.Helper()
	if err != nil {
		msg := err.Error()
		if !strings.Contains(msg, name) {
			t.Fatalf("config %.200q: error %.300q does not name %s", js, msg, name)
		}
		if len(msg) > MaxConfigError {
			t.Fatalf("config of %d bytes: error of %d bytes, want at most %d: %.300q", len(js), len(msg), MaxConfigError, msg)
		}
		if i := strings.IndexFunc(msg, func(r rune) bool { return r < 0x20 || r == 0x7f }); i >= 0 {
			t.Fatalf("config %.200q: error holds control character %q: %.300q", js, msg[i], msg)
		}
		return
	}
	trimmed := bytes.Trim([]byte(js), " \t\r\n")
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return
	}
	if trimmed[0] != '{' || !json.Valid(trimmed) {
		t.Fatalf("config %.200q accepted: not empty, null or one JSON object", js)
	}
}

// FuzzConfig runs f over the config parser grpc has registered for the
// policy name, whose config type is C: it never panics; every error
// passes CheckConfig; a config it accepts, decoded as the parser does
// (the outlierEjection field apart, the rest into C) and marshalled again,
// parses to an equal configuration.
func FuzzConfig[C any](f *testing.F, name string) {
	p := balancer.Get(name).(balancer.ConfigParser)
	f.Fuzz(func(t *testing.T, js string) {
		got, err := p.ParseConfig(json.RawMessage(js))
		CheckConfig(t, name, js, err)
		if err != nil {
			return
		}
		again := reencode[C](t, js)
		got2, err := p.ParseConfig(again)
		if err != nil {
			t.Fatalf("config %q accepted, but its re-encoding %s is refused: %v", js, again, err)
		}
		if !reflect.DeepEqual(got, got2) {
			t.Fatalf("config %q and its re-encoding %s parse differently", js, again)
		}
	})
}

// reencode decodes a config the parser accepted as the parser does and
// marshals it.
func reencode[C any](t *testing.T, js string) []byte {
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
	var cfg C
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
