// Package exampletest starts example servers for the examples' tests.
package exampletest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
)

// Serve starts a lodestar server for service on etcd endpoints, with
// register adding its implementation and opts, and stops it gracefully at
// cleanup.
func Serve(t *testing.T, endpoints []string, service string, register func(*lodestar.Server), opts ...lodestar.Option) *lodestar.Server {
	t.Helper()
	s, err := lodestar.NewServer(service, append([]lodestar.Option{lodestar.WithEtcdEndpoints(endpoints...), lodestar.WithTTL(2 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	register(s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve %s: %v", service, err)
		}
	})
	select {
	case <-s.Ready():
	case err := <-done:
		done <- err
		t.Fatalf("serve %s: %v", service, err)
	case <-time.After(20 * time.Second):
		t.Fatalf("%s not ready", service)
	}
	return s
}

// CheckServer runs an example server's run function on a fresh embedded
// etcd, checks that it registered under service, and dials it by name for
// call to use.
func CheckServer(t *testing.T, service string, run func(context.Context, []string, chan<- string) error, call func(context.Context, *lodestar.Conn)) {
	t.Helper()
	c := etcdtest.New(t)
	addr := RunServer(t, run, "--etcd", strings.Join(c.Endpoints(), ","))
	resp, err := c.Client(t).Get(context.Background(), "/services/"+service+"/"+addr)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("registration of %s: %v, %v", addr, resp, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := lodestar.Dial(ctx, service, lodestar.WithEtcdEndpoints(c.Endpoints()...), lodestar.WithWaitForReady())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	call(ctx, conn)
}

// RunServer runs an example server's run function until cleanup and
// returns the address it registered.
func RunServer(t *testing.T, run func(context.Context, []string, chan<- string) error, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, ready) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	select {
	case addr := <-ready:
		return addr
	case err := <-done:
		done <- err
		t.Fatalf("server: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("server not ready")
	}
	return ""
}
