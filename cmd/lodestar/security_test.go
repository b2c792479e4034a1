package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/embedetcd"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/registry"
	"github.com/lodestar-rpc/lodestar/security"
)

// lodestar cert writes a CA and certificates that the security package
// loads; lodestar auth sets up roles on an etcd served over mutual TLS
// with those certificates, and list reads as the reader.
func TestCertAndAuthCommands(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := newSyncBuffer()
	if err := run(ctx, []string{"cert", "--dir", dir, "--services", "user,etcd", "--clients", "order"}, nil, out, out); err != nil {
		t.Fatal(err)
	}
	f := func(n string) string { return filepath.Join(dir, n) }
	sc, err := security.NewServer(security.Config{CertFile: f("user.pem"), KeyFile: f("user-key.pem"), CAFile: f("ca.pem")})
	if err != nil {
		t.Fatalf("server files: %v", err)
	}
	sc.Close()
	cc, err := security.NewClient(security.Config{CertFile: f("order.pem"), KeyFile: f("order-key.pem"), CAFile: f("ca.pem")})
	if err != nil {
		t.Fatalf("client files: %v", err)
	}
	cc.Close()
	for _, bad := range [][]string{{"cert", "--dir", dir}, {"cert", "--dir", dir, "--services", "a/b"}, {"cert", "--dir", dir, "--clients", "x", "--validity", "-1h"}} {
		if err := run(ctx, bad, nil, out, out); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}

	// etcd over mutual TLS with the "etcd" certificate.
	tlsArgs := []string{"--etcd-ca", f("ca.pem"), "--etcd-cert", f("order.pem"), "--etcd-key", f("order-key.pem")}
	g := &globals{etcdCA: f("ca.pem"), etcdCert: f("order.pem"), etcdKey: f("order-key.pem")}
	cfg, err := g.etcdConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := etcdtest.New(t, etcdtest.ClientTLS(embedetcd.ClientTLS{CertFile: f("etcd.pem"), KeyFile: f("etcd-key.pem"), TrustedCAFile: f("ca.pem"), ClientCertAuth: true}, cfg.TLS))
	eps := []string{"--endpoints", strings.Join(c.Endpoints(), ",")}
	cmd := func(args ...string) error {
		return run(ctx, append(append(args, eps...), tlsArgs...), nil, out, out)
	}
	pwFile := func(name, pw string) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rootFile := pwFile("root", "rootpw")
	if err := cmd("auth", "enable", "--root-password-file", rootFile); err != nil {
		t.Fatal(err)
	}
	// The new user's password from the environment, root's from a file.
	t.Setenv("LODESTAR_USER_PASSWORD", "upw")
	root := []string{"--etcd-user", "root", "--etcd-password-file", rootFile}
	if err := cmd(append([]string{"auth", "registrar", "--service", "user", "--user", "u"}, root...)...); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LODESTAR_USER_PASSWORD", "")
	// The new user's password from stdin, root's from the environment.
	t.Setenv("LODESTAR_ETCD_PASSWORD", "rootpw")
	if err := run(ctx, append([]string{"auth", "reader", "--user", "r", "--password-stdin", "--etcd-user", "root", "--endpoints", strings.Join(c.Endpoints(), ",")}, tlsArgs...),
		strings.NewReader("rpw\n"), out, out); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LODESTAR_ETCD_PASSWORD", "")
	// The registrar user registers its service, and only it.
	val, _ := registry.Encode("127.0.0.1:7001", registry.Metadata{Version: "v9"})
	ucli, err := etcdclient.New(etcdclient.Config{Endpoints: c.Endpoints(), TLS: cfg.TLS, Username: "u", Password: "upw"})
	if err != nil {
		t.Fatal(err)
	}
	defer ucli.Close()
	if _, err := ucli.Put(ctx, "/services/user/a", string(val)); err != nil {
		t.Fatalf("registrar user writes its service: %v", err)
	}
	if _, err := ucli.Put(ctx, "/services/order/a", string(val)); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("registrar user wrote another service: %v", err)
	}
	out = newSyncBuffer()
	if err := cmd("list", "user", "--etcd-user", "r", "--etcd-password-file", pwFile("r", "rpw")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "v9") {
		t.Errorf("list as the reader:\n%s", out.String())
	}
	err = cmd("list", "--etcd-user", "r", "--etcd-password-file", pwFile("wrong", "wrong"))
	if err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Errorf("wrong password: %v", err)
	}
	if err := cmd("list", "--etcd-user", "r"); err == nil || !strings.Contains(err.Error(), "needs a password") {
		t.Errorf("user without password: %v", err)
	}
}
