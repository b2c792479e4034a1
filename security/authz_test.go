package security_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
	"github.com/lodestar-rpc/lodestar/security"
	"github.com/lodestar-rpc/lodestar/security/devcert"
)

type greeter struct {
	greeterpb.UnimplementedGreeterServer
}

func (greeter) SayHello(ctx context.Context, r *greeterpb.HelloRequest) (*greeterpb.HelloResponse, error) {
	id, _ := security.PeerIdentity(ctx)
	return &greeterpb.HelloResponse{Message: "hello " + id.CommonName}, nil
}

// Only "order" may call the inventory-like service; the identity the
// handler sees is the verified certificate's.
func TestAuthorizationByIdentity(t *testing.T) {
	p := newPKI(t, "lodestar test CA")
	cf, kf := p.issue("server", devcert.Request{CommonName: "greeter", IPs: loopback, Server: true})
	creds, err := security.NewServer(security.Config{CertFile: cf, KeyFile: kf, CAFile: p.caFile()})
	if err != nil {
		t.Fatal(err)
	}
	defer creds.Close()
	allow, err := security.Allow(map[string][]string{"/lodestar.examples.greeter.Greeter/*": {"order"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(creds), grpc.ChainUnaryInterceptor(security.UnaryServerInterceptor(allow)))
	greeterpb.RegisterGreeterServer(srv, greeter{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	defer func() { srv.Stop(); <-done }()

	hello := func(name string) (*greeterpb.HelloResponse, error) {
		cf, kf := p.issue(name, devcert.Request{CommonName: name, Client: true})
		cc, err := security.NewClient(security.Config{CertFile: cf, KeyFile: kf, CAFile: p.caFile()})
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(cc))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return greeterpb.NewGreeterClient(conn).SayHello(ctx, &greeterpb.HelloRequest{Name: "x"})
	}
	if r, err := hello("order"); err != nil || r.Message != "hello order" {
		t.Fatalf("order: %v, %v", r, err)
	}
	_, err = hello("billing")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `"billing" may not call "/lodestar.examples.greeter.Greeter/SayHello"`) {
		t.Fatalf("billing: %v", err)
	}
	if _, err := security.Allow(map[string][]string{"SayHello": {"x"}}); err == nil {
		t.Error("a malformed rule was accepted")
	}
}

// With UnknownMethodHandler and the stream interceptor, a plain grpc
// server authorises a call of a method or service it does not have
// before answering it: PERMISSION_DENIED to a caller not allowed, so it
// cannot tell which methods exist; UNIMPLEMENTED naming what is missing
// to one that is allowed.
func TestUnknownMethodAuthorisedFirst(t *testing.T) {
	p := newPKI(t, "lodestar test CA")
	cf, kf := p.issue("server", devcert.Request{CommonName: "greeter", IPs: loopback, Server: true})
	creds, err := security.NewServer(security.Config{CertFile: cf, KeyFile: kf, CAFile: p.caFile()})
	if err != nil {
		t.Fatal(err)
	}
	defer creds.Close()
	allow, err := security.Allow(map[string][]string{"/lodestar.examples.greeter.Greeter/*": {"order"}, "/x.Missing/*": {"order"}})
	if err != nil {
		t.Fatal(err)
	}
	var srv *grpc.Server
	srv = grpc.NewServer(grpc.Creds(creds),
		grpc.ChainUnaryInterceptor(security.UnaryServerInterceptor(allow)),
		grpc.ChainStreamInterceptor(security.StreamServerInterceptor(allow)),
		grpc.UnknownServiceHandler(security.UnknownMethodHandler(func() map[string]grpc.ServiceInfo { return srv.GetServiceInfo() })))
	greeterpb.RegisterGreeterServer(srv, greeter{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	defer func() { srv.Stop(); <-done }()

	call := func(name, method string) error {
		cf, kf := p.issue(name, devcert.Request{CommonName: name, Client: true})
		cc, err := security.NewClient(security.Config{CertFile: cf, KeyFile: kf, CAFile: p.caFile()})
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(cc))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return conn.Invoke(ctx, method, &greeterpb.HelloRequest{}, &greeterpb.HelloResponse{})
	}
	for _, m := range []string{"/lodestar.examples.greeter.Greeter/SayHello", "/lodestar.examples.greeter.Greeter/Missing", "/x.Missing/M"} {
		if err := call("billing", m); status.Code(err) != codes.PermissionDenied {
			t.Errorf("billing, %s: %v, want PermissionDenied", m, err)
		}
	}
	for m, want := range map[string]string{
		"/lodestar.examples.greeter.Greeter/Missing": `unknown method "Missing" of service "lodestar.examples.greeter.Greeter"`,
		"/x.Missing/M": `unknown service "x.Missing"`,
	} {
		if err := call("order", m); status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), want) {
			t.Errorf("order, %s: %v, want Unimplemented: %s", m, err, want)
		}
	}
}
