package hostport

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:8080", true},
		{"[::1]:50051", true},
		{"user.svc.cluster.local:443", true},
		{"127.0.0.1", false},
		{":8080", false},
		{"0.0.0.0:8080", false},
		{"[::]:8080", false},
		{"127.0.0.1:0", false},
		{"127.0.0.1:70000", false},
		{"127.0.0.1:http", false},
		{"a b:80", false},
		{"", false},
	} {
		err := Check(tc.addr)
		if (err == nil) != tc.ok {
			t.Errorf("Check(%q) = %v, want ok=%v", tc.addr, err, tc.ok)
		}
	}
}

// TestErrorsDoNotRepeatTheAddress: whatever the address, the message says
// what is wrong in a few words; it never holds the address or a part of
// it, so a 10 MB address cannot make a 10 MB error.
func TestErrorsDoNotRepeatTheAddress(t *testing.T) {
	const n = 10 << 20
	big := strings.Repeat("x", n)
	for _, addr := range []string{
		big,                              // no port
		big + ":" + big,                  // port not a number
		"[" + big,                        // missing ']'
		big + ":1:2",                     // too many colons
		big + " " + big + ":80",          // a space in the host
		"host:" + strings.Repeat("9", n), // port out of range
		"0.0.0.0:" + strings.Repeat("0", n) + "80", // unspecified, port written long
		"127.0.0.1:" + strings.Repeat("0", n),      // port 0, written long
	} {
		err := Check(addr)
		if err == nil {
			t.Errorf("Check(%d-byte address) = nil", len(addr))
			continue
		}
		if msg := err.Error(); len(msg) > 100 || strings.Contains(msg, "xxxx") {
			t.Errorf("Check(%d-byte address) = %d-byte error %.120q", len(addr), len(msg), msg)
		}
	}
}
