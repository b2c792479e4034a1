package etcdclient_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
)

// closedPort returns a 127.0.0.1 address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestProbeSaysWhy: where a request would only time out, Probe names
// each endpoint's reason (a refused connection, a TLS handshake with a
// plaintext etcd), and succeeds when any endpoint answers.
func TestProbeSaysWhy(t *testing.T) {
	c := etcdtest.New(t)
	live := c.Endpoints()[0]
	closed := closedPort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		eps  []string
		want []string // "" means no error
	}{
		{[]string{live}, nil},
		{[]string{"http://" + closed, live}, nil},
		{[]string{"http://" + closed}, []string{"http://" + closed + ": dial tcp " + closed + ": connect: connection refused"}},
		{[]string{"https://" + strings.TrimPrefix(live, "http://"), closed}, []string{
			"https://" + strings.TrimPrefix(live, "http://") + ": TLS handshake: ", closed + ": dial tcp " + closed + ": connect: connection refused"}},
	} {
		err := etcdclient.Probe(ctx, etcdclient.Config{Endpoints: tc.eps})
		if tc.want == nil {
			if err != nil {
				t.Errorf("Probe(%v) = %v, want nil", tc.eps, err)
			}
			continue
		}
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("Probe(%v) = %v, want a one-line error", tc.eps, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Probe(%v) = %v, want it to contain %q", tc.eps, err, w)
			}
		}
	}
}
