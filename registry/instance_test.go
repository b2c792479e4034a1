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
		{"space in service", func(in *Instance) { in.Service = "user svc" }, "space or control"},
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
		{`{"Addr":"10.0.0.1:1","Metadata":{"weight":"heavy"}}`, Metadata{}, "metadata of 10.0.0.1:1"},
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
