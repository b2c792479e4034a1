package registry

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// checkMessage fails t if an error message built from outside input is
// long or holds a raw control character.
func checkMessage(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	if len(msg) > 1024 {
		t.Fatalf("error of %d bytes: %.200s…", len(msg), msg)
	}
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < 0x20 || c == 0x7f {
			t.Fatalf("error holds raw control byte %#x: %q", c, msg)
		}
	}
}

// FuzzDecode checks Decode as a whole on any value: it never panics; an
// error is short and escapes what it quotes; a value it accepts has an
// address and valid metadata, and encodes to a value that decodes the
// same.
func FuzzDecode(f *testing.F) {
	for _, s := range quickSeeds {
		f.Add([]byte(s))
	}
	for _, v := range encodedSeeds(f) {
		f.Add(v)
	}
	big := strings.Repeat("x", 100<<10)
	for _, s := range []string{
		`{"Addr":"` + big + `"}`,
		`{"Addr":"10.0.0.1:1","Metadata":{"status":"` + big + `"}}`,
		`{"Addr":"` + big + `","Metadata":{"weight":"` + big + `"}}`,
		`{"Addr":"10.0.0.1:1","Metadata":{"labels":{"` + big + `":"` + big + `"}}}`,
		"{\"Addr\":\"\x1b[2J10.0.0.1:1\"}",
		`{"Addr":"\u001b]0;owned\u0007:1","Metadata":{"status":"\u001b[31m"}}`,
		"{\"Addr\":\"10.0.0.1:1\",\"Metadata\":{\"status\":\"\x00\x07\x1b\"}}",
		"\x1b[2J",
		`{"Addr":"10.0.0.1:1","Metadata":{"labels":{"":"x"}}}`,
		`{"Addr":"10.0.0.1:1","Metadata":{"weight":10001}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		addr, md, err := Decode(v)
		if err != nil {
			checkMessage(t, err)
			return
		}
		if addr == "" {
			t.Fatalf("Decode(%q) accepted an empty address", v)
		}
		if err := md.validate(); err != nil {
			t.Fatalf("Decode(%q) gave invalid metadata: %v", v, err)
		}
		again, err := Encode(addr, md)
		if err != nil {
			t.Fatalf("Encode of what Decode(%q) gave: %v", v, err)
		}
		addr2, md2, err := Decode(again)
		if err != nil || addr2 != addr {
			t.Fatalf("Decode(Encode(Decode(%q))) = %q, %v; want %q", v, addr2, err, addr)
		}
		if diff := cmp.Diff(md, md2, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("metadata of %q changed through Encode (-first +again):\n%s", v, diff)
		}
	})
}

// FuzzParseKey checks ParseKey on any prefix and key: it never panics, an
// error is short and escapes what it quotes, and a key it accepts is the
// one Key builds from the parts.
func FuzzParseKey(f *testing.F) {
	big := strings.Repeat("k", 100<<10)
	for _, s := range [][2]string{
		{"/services", "/services/user/127.0.0.1:80"},
		{"/services/", "/services/user/a"},
		{"/services", "/services/user/a/b"},
		{"/services", "/services//a"},
		{"/services", "/services/user/"},
		{"/services", "/other/user/a"},
		{"/", "/user/a"},
		{"", "/user/a"},
		{"/services", "/services/" + big},
		{big, big + "/x/y"},
		{"/services", "/services/\x1b[2J/\x07"},
		{"\x1b]0;x\x07", "/services/user/a"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, prefix, key string) {
		service, id, err := ParseKey(prefix, key)
		if err != nil {
			checkMessage(t, err)
			return
		}
		if service == "" || id == "" || strings.Contains(service, "/") || strings.Contains(id, "/") {
			t.Fatalf("ParseKey(%q, %q) = %q, %q", prefix, key, service, id)
		}
		if got := Key(prefix, service, id); got != key {
			t.Fatalf("ParseKey(%q, %q) = %q, %q, but Key gives %q", prefix, key, service, id, got)
		}
	})
}
