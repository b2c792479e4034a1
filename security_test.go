package lodestar_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/security"
	"github.com/lodestar-rpc/lodestar/security/devcert"
)

// devPKI writes a CA, a server certificate for the service "user" and
// client certificates for the names given, and returns the directory.
func devPKI(t *testing.T, clients ...string) string {
	t.Helper()
	dir := t.TempDir()
	ca, err := devcert.NewCA("lodestar test CA", time.Hour)
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
	issue("user", devcert.Request{CommonName: "user", DNSNames: []string{"user"}, Server: true})
	for _, c := range clients {
		issue(c, devcert.Request{CommonName: c, Client: true})
	}
	return dir
}

func tlsFor(dir, name string) security.Config {
	return security.Config{CertFile: filepath.Join(dir, name+".pem"), KeyFile: filepath.Join(dir, name+"-key.pem"), CAFile: filepath.Join(dir, "ca.pem")}
}

// NewServer and Dial with mutual TLS: calls work, the server sees the
// client's identity and authorises by it, and a plaintext Dial is refused
// with a clear error.
func TestMutualTLSThroughServerAndDial(t *testing.T) {
	c := etcdtest.New(t)
	dir := devPKI(t, "order", "billing")
	allow, err := security.Allow(map[string][]string{"/lodestar.examples.greeter.Greeter/*": {"order"}})
	if err != nil {
		t.Fatal(err)
	}
	startInstance(t, c.Endpoints(), lodestar.WithTLS(tlsFor(dir, "user")), lodestar.WithAuthorization(allow))

	order := dial(t, c.Endpoints(), lodestar.WithTLS(tlsFor(dir, "order")))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if r, err := greeterpb.NewGreeterClient(order).SayHello(ctx, &greeterpb.HelloRequest{Name: "order"}); err != nil || r.Message != "Hello order" {
		t.Fatalf("order over mTLS: %v, %v", r, err)
	}
	billing := dial(t, c.Endpoints(), lodestar.WithTLS(tlsFor(dir, "billing")))
	if _, err := greeterpb.NewGreeterClient(billing).SayHello(ctx, &greeterpb.HelloRequest{Name: "b"}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `"billing" may not call`) {
		t.Fatalf("billing: %v", err)
	}

	plain, err := lodestar.Dial(ctx, "user", lodestar.WithEtcdEndpoints(c.Endpoints()...), lodestar.WithoutHealthCheck())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	_, err = greeterpb.NewGreeterClient(plain).SayHello(ctx, &greeterpb.HelloRequest{Name: "p"})
	if err == nil || !strings.Contains(err.Error(), "this server requires TLS") {
		t.Fatalf("plaintext Dial to a TLS server: %v", err)
	}
	if _, err := lodestar.NewServer("user", lodestar.WithAuthorization(allow)); err == nil || !strings.Contains(err.Error(), "authorization needs mutual TLS") {
		t.Errorf("authorization without TLS: %v", err)
	}
	if _, err := lodestar.Dial(ctx, "user", lodestar.WithTLS(security.Config{CAFile: filepath.Join(dir, "nope.pem")})); err == nil || !strings.Contains(err.Error(), "nope.pem") {
		t.Errorf("missing CA file: %v", err)
	}
}

// A client authenticated by its certificate but not authorised gets
// PERMISSION_DENIED for every method, whether the server has it or not,
// so it cannot learn which methods exist by trying names; an authorised
// client still learns that a method does not exist.
func TestUnknownMethodsAuthorisedFirst(t *testing.T) {
	c := etcdtest.New(t)
	dir := devPKI(t, "order", "billing")
	allow, err := security.Allow(map[string][]string{"/lodestar.examples.greeter.Greeter/*": {"order"}, "/lodestar.examples.Nope/*": {"order"}})
	if err != nil {
		t.Fatal(err)
	}
	startInstance(t, c.Endpoints(), lodestar.WithTLS(tlsFor(dir, "user")), lodestar.WithAuthorization(allow))
	order := dial(t, c.Endpoints(), lodestar.WithTLS(tlsFor(dir, "order")))
	billing := dial(t, c.Endpoints(), lodestar.WithTLS(tlsFor(dir, "billing")))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	call := func(conn *lodestar.Conn, method string) error {
		return conn.Invoke(ctx, method, &greeterpb.HelloRequest{Name: "x"}, &greeterpb.HelloResponse{})
	}
	for _, m := range []string{
		"/lodestar.examples.greeter.Greeter/SayHello", // known
		"/lodestar.examples.greeter.Greeter/Nope",     // unknown method of a known service
		"/lodestar.examples.Nope/SayHello",            // unknown service
		"/lodestar.examples.user.UserService/GetUser", // known, no rule
	} {
		if err := call(billing, m); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `"billing" may not call "`+m+`"`) {
			t.Errorf("unauthorised client, %s: %v, want PermissionDenied naming the caller", m, err)
		}
	}
	if err := call(order, "/lodestar.examples.greeter.Greeter/Nope"); status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), `unknown method "Nope" of service "lodestar.examples.greeter.Greeter"`) {
		t.Errorf("authorised client, unknown method: %v, want Unimplemented naming it", err)
	}
	if err := call(order, "/lodestar.examples.Nope/SayHello"); status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), `unknown service "lodestar.examples.Nope"`) {
		t.Errorf("authorised client, unknown service: %v, want Unimplemented naming it", err)
	}
	if err := call(order, "/lodestar.examples.greeter.Greeter/SayHello"); err != nil {
		t.Errorf("authorised client, known method: %v", err)
	}
}
