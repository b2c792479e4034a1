package main

import (
	"context"
	"io"
	"testing"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/internal/exampletest"
	"github.com/lodestar-rpc/lodestar/examples/proto/userpb"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

func TestServerRegistersAndAnswers(t *testing.T) {
	exampletest.CheckServer(t, "user", func(ctx context.Context, args []string, ready chan<- string) error {
		return run(ctx, args, io.Discard, ready)
	}, func(ctx context.Context, conn *lodestar.Conn) { callOnce(ctx, t, conn) })
}

func callOnce(ctx context.Context, t *testing.T, conn *lodestar.Conn) {
	r, err := userpb.NewUserServiceClient(conn).CreateUser(ctx, &userpb.CreateUserRequest{Name: "Ada"})
	if err != nil || !r.Success || r.Data.Name != "Ada" {
		t.Fatalf("CreateUser: %v, %v", r, err)
	}
}
