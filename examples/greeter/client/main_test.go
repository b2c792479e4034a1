package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/greeter/greetersvc"
	"github.com/lodestar-rpc/lodestar/examples/internal/exampletest"
	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
	"github.com/lodestar-rpc/lodestar/security"
	"github.com/lodestar-rpc/lodestar/security/devcert"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

func TestClientCallsTheService(t *testing.T) {
	c := etcdtest.New(t)
	exampletest.Serve(t, c.Endpoints(), "greeter", func(s *lodestar.Server) { greeterpb.RegisterGreeterServer(s, greetersvc.New(s.Addr)) })
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--etcd", strings.Join(c.Endpoints(), ",")}, &out); err != nil {
		t.Fatalf("client: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "Hello world from") {
		t.Errorf("client output:\n%s", out.String())
	}
	t.Log(out.String())
}

// The example end to end over mutual TLS, with the files "lodestar cert"
// writes: the client with its certificate is answered; without the TLS
// flag it is refused with the reason.
func TestClientOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := devcert.NewCA("lodestar development CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := devcert.WriteFiles(dir, "ca", ca.CertPEM, ca.KeyPEM); err != nil {
		t.Fatal(err)
	}
	for name, req := range map[string]devcert.Request{
		"greeter":        {CommonName: "greeter", DNSNames: []string{"greeter"}, Server: true},
		"greeter-client": {CommonName: "greeter-client", Client: true},
	} {
		c, k, err := ca.Issue(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := devcert.WriteFiles(dir, name, c, k); err != nil {
			t.Fatal(err)
		}
	}
	c := etcdtest.New(t)
	etcd := strings.Join(c.Endpoints(), ",")
	exampletest.Serve(t, c.Endpoints(), "greeter", func(s *lodestar.Server) { greeterpb.RegisterGreeterServer(s, greetersvc.New(s.Addr)) },
		lodestar.WithTLS(security.Config{CertFile: filepath.Join(dir, "greeter.pem"), KeyFile: filepath.Join(dir, "greeter-key.pem"), CAFile: filepath.Join(dir, "ca.pem")}))
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--etcd", etcd, "--tls-dir", dir, "--name", "tls"}, &out); err != nil {
		t.Fatalf("client over mTLS: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "Hello tls from") {
		t.Errorf("client output:\n%s", out.String())
	}
	out.Reset()
	err = run(context.Background(), []string{"--etcd", etcd, "--name", "plain"}, &out)
	t.Logf("plaintext client against the TLS server: %v", err)
	if err == nil || !strings.Contains(err.Error(), "requires TLS") {
		t.Errorf("plaintext client against the TLS server: %v", err)
	}
}
