package etcdauth_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lodestar-rpc/lodestar/discovery"
	"github.com/lodestar-rpc/lodestar/etcdauth"
	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/embedetcd"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
	"github.com/lodestar-rpc/lodestar/registry"
	"github.com/lodestar-rpc/lodestar/security/devcert"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

// secureEtcd starts etcd serving clients over mutual TLS, with auth on,
// a registrar user for "user" and a reader; it returns the cluster and
// the client TLS files' directory.
func secureEtcd(t *testing.T) (*etcdtest.Cluster, string) {
	t.Helper()
	dir := t.TempDir()
	ca, err := devcert.NewCA("etcd test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	issue := func(name string, req devcert.Request) {
		c, k, err := ca.Issue(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := devcert.WriteFiles(dir, name, c, k); err != nil {
			t.Fatal(err)
		}
	}
	issue("etcd", devcert.Request{CommonName: "etcd", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	issue("client", devcert.Request{CommonName: "lodestar", Client: true})
	cliTLS, err := etcdclient.TLSFiles(filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem"), filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	c := etcdtest.New(t, etcdtest.ClientTLS(embedetcd.ClientTLS{
		CertFile: filepath.Join(dir, "etcd.pem"), KeyFile: filepath.Join(dir, "etcd-key.pem"),
		TrustedCAFile: filepath.Join(dir, "ca.pem"), ClientCertAuth: true,
	}, cliTLS))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := c.Client(t)
	if err := etcdauth.EnableAuth(ctx, admin, "rootpw"); err != nil {
		t.Fatal(err)
	}
	root := client(t, c, "root", "rootpw")
	if err := etcdauth.Registrar(ctx, root, "", "user", "user-registrar", "regpw"); err != nil {
		t.Fatal(err)
	}
	if err := etcdauth.Reader(ctx, root, "", "reader", "readpw"); err != nil {
		t.Fatal(err)
	}
	return c, dir
}

func client(t *testing.T, c *etcdtest.Cluster, user, password string) *clientv3.Client {
	t.Helper()
	// New fetches a token within DialTimeout: generous, as it only bounds
	// a hang on a loaded machine.
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: c.Endpoints(), TLS: c.TLS(), Username: user, Password: password, DialTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Over TLS with auth on, a registrar with its role registers and a reader
// discovers; a registrar without write permission on a service gets a
// permission error and keeps retrying, and a reader cannot write.
func TestRolesOverTLS(t *testing.T) {
	c, _ := secureEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	events := make(chan registry.Event, 100)
	reg, err := registry.New(client(t, c, "user-registrar", "regpw"),
		registry.WithEventHandler(func(e registry.Event) {
			select {
			case events <- e:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	srv := testserver.Start(t)
	if _, err := reg.Register(ctx, registry.Instance{Service: "user", Addr: srv.Addr}); err != nil {
		t.Fatalf("registrar with its role: %v", err)
	}

	// Discovery with the reader's role finds it: a call reaches it.
	reader := client(t, c, "reader", "readpw")
	b, err := discovery.NewBuilder(reader)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(discovery.Target("user"), grpc.WithResolvers(b), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := testserver.Call(ctx, conn, grpc.WaitForReady(true)); err != nil || srv.Calls() != 1 {
		t.Fatalf("call through discovery with the reader role: %v (%d calls)", err, srv.Calls())
	}
	resp, err := reader.Get(ctx, registry.ServicePrefix(registry.DefaultPrefix, "user"), clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reader: %v, %v", resp, err)
	}
	if _, err := reader.Put(ctx, "/services/user/x", "{}"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("reader wrote: %v", err)
	}

	// The same registrar for a service it has no role for: it keeps
	// retrying, saying why, and Register, given up on once two attempts
	// were refused, says why too.
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	registered := make(chan error, 1)
	go func() {
		_, err := reg.Register(rctx, registry.Instance{Service: "order", Addr: "127.0.0.1:7002"})
		registered <- err
	}()
	for n := 0; n < 2; {
		select {
		case e := <-events:
			if e.Err != nil && strings.Contains(e.Err.Error(), "permission denied") {
				n++
			}
		case err := <-registered:
			t.Fatalf("registering without permission returned before being refused: %v", err)
		case <-ctx.Done():
			t.Fatal("no refused attempt reported")
		}
	}
	rcancel()
	err = <-registered
	var pending *registry.PendingError
	if !errors.As(err, &pending) || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("registering without permission: %v", err)
	}
	resp, err = reader.Get(ctx, registry.ServicePrefix(registry.DefaultPrefix, "user"), clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the permitted instance after the refused one: %v, %v", resp, err)
	}
}

func TestWrongPasswordSaysSo(t *testing.T) {
	c, _ := secureEtcd(t)
	_, err := etcdclient.New(etcdclient.Config{Endpoints: c.Endpoints(), TLS: c.TLS(), Username: "reader", Password: "nope", DialTimeout: 30 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("wrong password: %v", err)
	}
}
