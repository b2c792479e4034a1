package main

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/internal/exampletest"
	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

func TestServerRegistersAndAnswers(t *testing.T) {
	exampletest.CheckServer(t, "greeter", func(ctx context.Context, args []string, ready chan<- string) error {
		return run(ctx, args, io.Discard, ready)
	}, func(ctx context.Context, conn *lodestar.Conn) { callOnce(ctx, t, conn) })
}

func callOnce(ctx context.Context, t *testing.T, conn *lodestar.Conn) {
	r, err := greeterpb.NewGreeterClient(conn).SayHello(ctx, &greeterpb.HelloRequest{Name: "Ada"})
	if err != nil || !strings.HasPrefix(r.Message, "Hello Ada from 127.0.0.1:") {
		t.Fatalf("SayHello: %v, %v", r, err)
	}
}
