package hostport

import "testing"

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
