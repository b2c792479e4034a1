package lbtest

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
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
