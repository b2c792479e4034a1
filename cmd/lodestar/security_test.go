package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	if err := run(ctx, []string{"cert", "--dir", dir, "--services", "user,etcd", "--clients", "order"}, out, out); err != nil {
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
		if err := run(ctx, bad, out, out); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}

	// etcd over mutual TLS with the "etcd" certificate.
	tlsArgs := []string{"--etcd-ca", f("ca.pem"), "--etcd-cert", f("order.pem"), "--etcd-key", f("order-key.pem")}
	g := &globals{etcdCA: f("ca.pem"), etcdCert: f("order.pem"), etcdKey: f("order-key.pem")}
	cfg, err := g.etcdConfig()
	if err != nil {
		t.Fatal(err)
	}
	c := etcdtest.New(t, etcdtest.ClientTLS(embedetcd.ClientTLS{CertFile: f("etcd.pem"), KeyFile: f("etcd-key.pem"), TrustedCAFile: f("ca.pem"), ClientCertAuth: true}, cfg.TLS))
	eps := []string{"--endpoints", strings.Join(c.Endpoints(), ",")}
	cmd := func(args ...string) error {
		return run(ctx, append(append(args, eps...), tlsArgs...), out, out)
	}
	if err := cmd("auth", "enable", "--root-password", "rootpw"); err != nil {
		t.Fatal(err)
	}
	root := []string{"--etcd-user", "root", "--etcd-password", "rootpw"}
	if err := cmd(append([]string{"auth", "registrar", "--service", "user", "--user", "u", "--password", "upw"}, root...)...); err != nil {
		t.Fatal(err)
	}
	if err := cmd(append([]string{"auth", "reader", "--user", "r", "--password", "rpw"}, root...)...); err != nil {
		t.Fatal(err)
	}
	// The registrar user registers its service, and only it.
	val, _ := registry.Encode("127.0.0.1:7001", registry.Metadata{Version: "v9"})
	g.etcdUser, g.etcdPassword, g.endpoints = "u", "upw", c.Endpoints()
	ucli, err := g.etcdClient()
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
	if err := cmd("list", "user", "--etcd-user", "r", "--etcd-password", "rpw"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "v9") {
		t.Errorf("list as the reader:\n%s", out.String())
	}
	err = cmd("list", "--etcd-user", "r", "--etcd-password", "wrong")
	if err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Errorf("wrong password: %v", err)
	}
	if err := cmd("list", "--etcd-user", "r"); err == nil || !strings.Contains(err.Error(), "needs a password") {
		t.Errorf("user without password: %v", err)
	}
}
