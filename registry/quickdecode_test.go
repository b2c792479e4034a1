package registry

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// slowDecode is Decode's encoding/json path alone.
func slowDecode(v []byte) (string, lenientMeta, error) {
	var w decodeValue
	err := json.Unmarshal(v, &w)
	return w.Addr, w.Metadata, err
}

var quickSeeds = []string{
	`{"Addr":"10.0.0.1:1"}`,
	`{"Addr":"10.0.0.1:1","Metadata":null}`,
	`{"Addr":"10.0.0.1:1","Metadata":"some string"}`,
	`{"Addr":"10.0.0.1:1","Metadata":{}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"version":"v2","other":true}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"weight":"heavy"}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"weight":-3}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"weight":1.5}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"weight":1e3}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"weight":0012}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"weight":99999999999999999999}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"labels":{"a":"b","a":"c"}}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"labels":{}}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"labels":null}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"zone":"a","zone":"b"}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"labels":{"a":"1"},"labels":{"b":"2"}}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"labels":{"a":"1"}},"Metadata":{"zone":"z"}}`,
	`{"addr":"10.0.0.1:1"}`,
	`{"Addr":"10.0.0.1:1","Addr":"10.0.0.2:2"}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"Version":"v1"}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"version":"v\u00e9"}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"version":"v\"1"}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"version":"vé"}}`,
	`{"Addr":"10.0.0.1:1"} `,
	` {"Addr":"10.0.0.1:1"}`,
	`{"Addr":"10.0.0.1:1"}x`,
	`{"Addr":"10.0.0.1:1",}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"version":"v1",}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"labels":{"a":1}}}`,
	`{"Op":0,"Addr":"10.0.0.1:1","Metadata":null}`,
	`{"Addr":10}`,
	`{"Addr":"10.0.0.1:1"`,
	`{"Addr":"10.0.0.1:1","Metadata":{"weight":-}}`,
	`{"Addr":"10.0.0.1:1","Metadata":{"weight":-0}}`,
	`[]`,
	`not json`,
	``,
}

func encodedSeeds(t testing.TB) [][]byte {
	var out [][]byte
	for _, md := range []Metadata{
		{},
		{Weight: 100, Status: StatusServing},
		{Version: "v1.42.3", Region: "eu-west", Zone: "eu-west-1a", Weight: 7, Status: StatusDraining,
			Labels: map[string]string{"track": "stable", "pool": "general"}},
		{Weight: MaxWeight, Labels: map[string]string{"k": ""}},
	} {
		v, err := Encode("127.0.0.1:8080", md)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// FuzzQuickDecode checks Decode's fast path against encoding/json: for
// any input the fast path accepts, encoding/json accepts it too and reads
// the same address and metadata.
func FuzzQuickDecode(f *testing.F) {
	for _, s := range quickSeeds {
		f.Add([]byte(s))
	}
	for _, v := range encodedSeeds(f) {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		addr, meta, ok := quickDecode(v)
		if !ok {
			return
		}
		wantAddr, wantMeta, err := slowDecode(v)
		if err != nil {
			t.Fatalf("quickDecode accepted %q, which encoding/json refuses: %v", v, err)
		}
		if addr != wantAddr {
			t.Fatalf("quickDecode(%q) addr %q, encoding/json %q", v, addr, wantAddr)
		}
		if diff := cmp.Diff(wantMeta, meta, cmp.AllowUnexported(lenientMeta{})); diff != "" {
			t.Fatalf("quickDecode(%q) metadata differs from encoding/json (-json +quick):\n%s", v, diff)
		}
	})
}

// TestQuickDecodeTakesEncodeOutput: what Encode writes for printable ASCII
// names and metadata (what registrars write in practice) is decoded by the
// fast path. Values with characters json.Marshal escapes (<, >, &) or
// non-ASCII ones take encoding/json, at the old cost.
func TestQuickDecodeTakesEncodeOutput(t *testing.T) {
	for _, v := range encodedSeeds(t) {
		if _, _, ok := quickDecode(v); !ok {
			t.Errorf("the fast path declined Encode's output %s", v)
		}
	}
}
