package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/internal/exampletest"
	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServerRegistersAndAnswers(t *testing.T) {
	c := etcdtest.New(t)
	addr := exampletest.RunServer(t, func(ctx context.Context, args []string, ready chan<- string) error {
		return run(ctx, args, io.Discard, ready)
	}, "--etcd", strings.Join(c.Endpoints(), ","))
	resp, err := c.Client(t).Get(context.Background(), "/services/greeter/"+addr)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("registration of %s: %v, %v", addr, resp, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := lodestar.Dial(ctx, "greeter", lodestar.WithEtcdEndpoints(c.Endpoints()...), lodestar.WithWaitForReady())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	callOnce(ctx, t, conn)
}

func callOnce(ctx context.Context, t *testing.T, conn *lodestar.Conn) {
	r, err := greeterpb.NewGreeterClient(conn).SayHello(ctx, &greeterpb.HelloRequest{Name: "Ada"})
	if err != nil || !strings.HasPrefix(r.Message, "Hello Ada from 127.0.0.1:") {
		t.Fatalf("SayHello: %v, %v", r, err)
	}
}
