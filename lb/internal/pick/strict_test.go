package pick

import (
	"encoding/json"
	"strings"
	"testing"
)

// Strict takes empty and null as defaults, as grpc's own policies take
// null, and refuses anything but one JSON object, naming the policy and
// what is wrong.
func TestStrictOneObject(t *testing.T) {
	var v struct {
		N int `json:"n"`
	}
	for _, js := range []string{``, ` `, `null`, " null\n", `{}`, `{"n":1}`, "\t{\"n\":1}\r\n"} {
		if err := Strict("p", json.RawMessage(js), &v); err != nil {
			t.Errorf("%q: %v", js, err)
		}
	}
	for js, want := range map[string]string{
		`null garbage`:    `p: config null garbage: data after the first JSON value, at byte 5`,
		`{} {}`:           `p: config {} {}: data after the first JSON value, at byte 3`,
		` {"n":1}x`:       `p: config  {"n":1}x: data after the first JSON value, at byte 8`,
		"\u00a0null":      `p: config "\u00a0null": invalid character`,
		`[]`:              `p: config []: json: cannot unmarshal array`,
		`3`:               `p: config 3: json: cannot unmarshal number`,
		`{"m":1}`:         `p: config {"m":1}: json: unknown field "m"`,
		`{"n":"1"}`:       `p: config {"n":"1"}: json: cannot unmarshal string`,
		"{\"n\":1}\t{}":   `p: config "{\"n\":1}\t{}": data after the first JSON value`,
		`{"n":1,"n":[1]}`: `cannot unmarshal array`,
	} {
		err := Strict("p", json.RawMessage(js), &v)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", js, err, want)
		}
	}
}

// An error quotes a bounded prefix of a huge config and of the part the
// decoder names (an unknown field, a number that does not fit), and says
// how long they were.
func TestStrictBoundsHugeInput(t *testing.T) {
	var v struct {
		N int `json:"n"`
	}
	big := strings.Repeat("x", 100<<10)
	digits := "1" + strings.Repeat("0", 100<<10)
	for js, want := range map[string]string{
		`{"` + big + `":1}`:    `json: unknown field "xxxxxxxx`,
		`{"n":` + digits + `}`: `json: cannot unmarshal "number 100000`,
		`null "` + big + `"`:   `data after the first JSON value, at byte 5`,
		strings.Repeat(`{"n":`, 1000) + `1` + strings.Repeat(`}`, 1000): `nested more than 32 levels deep`,
	} {
		err := Strict("p", json.RawMessage(js), &v)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), " bytes)") {
			t.Errorf("%.40q…: error %.300v, want %q and a length", js, err, want)
			continue
		}
		if len(err.Error()) > 512 {
			t.Errorf("%.40q…: error of %d bytes: %.300s", js, len(err.Error()), err)
		}
	}
}
