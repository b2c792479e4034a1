package registry

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
)

func TestNormalizeRejectsBadInput(t *testing.T) {
	good := Instance{Service: "user", Addr: "127.0.0.1:8080"}
	for _, tc := range []struct {
		name string
		mod  func(*Instance)
		want string
	}{
		{"empty service", func(in *Instance) { in.Service = "" }, "service name is empty"},
		{"slash in service", func(in *Instance) { in.Service = "user/v1" }, "contains '/'"},
		{"space in service", func(in *Instance) { in.Service = "user svc" }, "space, control"},
		{"escape in service", func(in *Instance) { in.Service = "user\x1b[2J" }, `service name "user\x1b[2J" contains a space, control or formatting character (U+001B)`},
		{"bidi override in id", func(in *Instance) { in.ID = "a\u202eb" }, "(U+202E)"},
		{"C1 control in id", func(in *Instance) { in.ID = "a\u009bb" }, "(U+009B)"},
		{"invalid UTF-8 in id", func(in *Instance) { in.ID = "a\xffb" }, `instance id "a\xffb" is not valid UTF-8`},
		{"dot service", func(in *Instance) { in.Service = "." }, `service name "." is a path element`},
		{"dot-dot service", func(in *Instance) { in.Service = ".." }, `service name ".." is a path element`},
		{"dot-dot id", func(in *Instance) { in.ID = ".." }, `instance id ".." is a path element`},
		{"slash in id", func(in *Instance) { in.ID = "a/b" }, "instance id \"a/b\" contains '/'"},
		{"no port", func(in *Instance) { in.Addr = "127.0.0.1" }, "address \"127.0.0.1\""},
		{"empty address", func(in *Instance) { in.Addr = "" }, "address \"\""},
		{"unspecified host", func(in *Instance) { in.Addr = "0.0.0.0:8080" }, "unspecified"},
		{"port out of range", func(in *Instance) { in.Addr = "127.0.0.1:99999" }, "1-65535"},
		{"weight too big", func(in *Instance) { in.Metadata.Weight = MaxWeight + 1 }, "weight 10001 out of range"},
		{"negative weight", func(in *Instance) { in.Metadata.Weight = -1 }, "weight -1 out of range"},
		{"unknown status", func(in *Instance) { in.Metadata.Status = "up" }, `status "up"`},
		{"empty label name", func(in *Instance) { in.Metadata.Labels = map[string]string{"": "x"} }, "empty name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := good
			tc.mod(&in)
			_, err := in.normalize()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("normalize(%+v) = %v, want an error containing %q", in, err, tc.want)
			}
		})
	}
}

func TestNormalizeDefaults(t *testing.T) {
	in, err := Instance{Service: "user", Addr: "127.0.0.1:8080"}.normalize()
	if err != nil {
		t.Fatal(err)
	}
	want := Instance{Service: "user", ID: "127.0.0.1:8080", Addr: "127.0.0.1:8080",
		Metadata: Metadata{Weight: DefaultWeight, Status: StatusServing}}
	if diff := cmp.Diff(in, want); diff != "" {
		t.Fatalf("normalize (-got +want):\n%s", diff)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	md := Metadata{Version: "v1.2.0", Region: "eu", Zone: "eu-1a", Weight: 30, Status: StatusDraining,
		Labels: map[string]string{"shard": "3"}}
	val, err := Encode("127.0.0.1:9000", md)
	if err != nil {
		t.Fatal(err)
	}
	addr, got, err := Decode(val)
	if err != nil {
		t.Fatal(err)
	}
	if addr != "127.0.0.1:9000" {
		t.Errorf("addr = %q", addr)
	}
	if diff := cmp.Diff(got, md); diff != "" {
		t.Errorf("metadata (-got +want):\n%s", diff)
	}
	// etcd's own type reads it.
	var ep endpoints.Endpoint
	if err := json.Unmarshal(val, &ep); err != nil || ep.Addr != "127.0.0.1:9000" {
		t.Fatalf("endpoints.Endpoint from %s: %+v, %v", val, ep, err)
	}
	// Weight 0 set on purpose survives the round trip.
	val, _ = Encode("127.0.0.1:9000", Metadata{Weight: 0, Status: StatusServing})
	if _, got, _ := Decode(val); got.Weight != 0 {
		t.Errorf("explicit weight 0 decoded as %d", got.Weight)
	}
}

func TestDecodeForeignAndMalformed(t *testing.T) {
	def := Metadata{Weight: DefaultWeight, Status: StatusServing}
	for _, tc := range []struct {
		val     string
		want    Metadata
		wantErr string
	}{
		{`{"Addr":"10.0.0.1:1","Metadata":null}`, def, ""},
		{`{"Addr":"10.0.0.1:1"}`, def, ""},
		{`{"Addr":"10.0.0.1:1","Metadata":"some string"}`, def, ""},
		{`{"Addr":"10.0.0.1:1","Metadata":{"version":"v2","other":true}}`, Metadata{Version: "v2", Weight: DefaultWeight, Status: StatusServing}, ""},
		{`not json`, Metadata{}, "not an endpoint JSON object"},
		{`{"Metadata":{}}`, Metadata{}, `no "Addr"`},
		{`{"Addr":"10.0.0.1:1","Metadata":{"weight":"heavy"}}`, Metadata{}, `metadata of "10.0.0.1:1"`},
		{`{"Addr":"10.0.0.1:1","Metadata":{"weight":-3}}`, Metadata{}, "weight -3 out of range"},
		{`{"Addr":"10.0.0.1:1","Metadata":{"status":"gone"}}`, Metadata{}, `status "gone"`},
	} {
		_, got, err := Decode([]byte(tc.val))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Decode(%s) = %v, want error containing %q", tc.val, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Decode(%s): %v", tc.val, err)
			continue
		}
		if diff := cmp.Diff(got, tc.want); diff != "" {
			t.Errorf("Decode(%s) (-got +want):\n%s", tc.val, diff)
		}
	}
}

func TestParseKey(t *testing.T) {
	svc, id, err := ParseKey("/services", "/services/user/127.0.0.1:80")
	if err != nil || svc != "user" || id != "127.0.0.1:80" {
		t.Fatalf("ParseKey = %q, %q, %v", svc, id, err)
	}
	for _, k := range []string{"/other/user/a", "/services/user", "/services/user/", "/services//a", "/services/user/a/b"} {
		if _, _, err := ParseKey("/services/", k); err == nil {
			t.Errorf("ParseKey(%q) accepted", k)
		}
	}
	if Key("/services/", "user", "a") != "/services/user/a" {
		t.Errorf("Key = %q", Key("/services/", "user", "a"))
	}
}

// TestErrorsQuoteBoundedPrefix: whatever the size of the input an error is
// built from, the error stays short, quotes a prefix of it with control
// characters escaped, and says how long it was.
func TestErrorsQuoteBoundedPrefix(t *testing.T) {
	huge := strings.Repeat("\x1b[31m", (10<<20)/5) // 10 MiB of escape sequences
	good := Instance{Service: "user", Addr: "127.0.0.1:8080"}
	norm := func(mod func(*Instance)) func() error {
		return func() error {
			in := good
			mod(&in)
			_, err := in.normalize()
			return err
		}
	}
	value := func(addr, status string) []byte {
		b, _ := json.Marshal(map[string]any{"Addr": addr, "Metadata": map[string]any{"status": status}})
		return b
	}
	for _, tc := range []struct {
		name string
		f    func() error
	}{
		{"address", norm(func(in *Instance) { in.Addr = huge })},
		{"address with port", norm(func(in *Instance) { in.Addr = huge + ":80" })},
		{"service", norm(func(in *Instance) { in.Service = huge })},
		{"id", norm(func(in *Instance) { in.ID = huge })},
		{"status", norm(func(in *Instance) { in.Metadata.Status = Status(huge) })},
		{"service of a bad address", norm(func(in *Instance) { in.Service, in.Addr = huge, "x" })},
		{"decoded status", func() error { _, _, err := Decode(value("10.0.0.1:1", huge)); return err }},
		{"decoded status and address", func() error { _, _, err := Decode(value(huge, huge)); return err }},
		{"decoded metadata of the wrong type", func() error {
			_, _, err := Decode([]byte(`{"Addr":"` + strings.Repeat("a", 10<<20) + `","Metadata":{"weight":"` + strings.Repeat("b", 10<<20) + `"}}`))
			return err
		}},
		{"key not under prefix", func() error { _, _, err := ParseKey(huge, huge); return err }},
		{"key not service/id", func() error { _, _, err := ParseKey("/services", "/services/"+huge); return err }},
		{"ValidateService", func() error { return ValidateService(huge) }},
		{"ValidateID", func() error { return ValidateID(huge + "/") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f()
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if len(msg) > 1024 {
				t.Fatalf("error of %d bytes: %.200s...", len(msg), msg)
			}
			if strings.ContainsAny(msg, "\x1b\x00") {
				t.Errorf("error holds a raw control character: %q", msg)
			}
			// Each quote holds at most 64 bytes of input, 12 sequences of 5.
			if n := strings.Count(msg, `\x1b[31m`); n > 2*12 {
				t.Errorf("error quotes %d escape sequences, more than two bounded prefixes: %.300s", n, msg)
			} else if n > 0 && !strings.Contains(msg, "bytes)") {
				t.Errorf("error quotes the input without its length: %s", msg)
			}
			t.Log(msg)
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	v, _ := Encode("10.0.0.5:8080", Metadata{Version: "v1.4.2", Region: "eu", Zone: "eu-1a", Weight: 100,
		Status: StatusServing, Labels: map[string]string{"track": "stable", "pool": "general"}})
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Decode(v); err != nil {
			b.Fatal(err)
		}
	}
}
