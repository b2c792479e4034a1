package main

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/internal/exampletest"
	"github.com/lodestar-rpc/lodestar/examples/proto/orderpb"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

func TestServerRegistersAndAnswers(t *testing.T) {
	exampletest.CheckServer(t, "order", func(ctx context.Context, args []string, ready chan<- string) error {
		return run(ctx, args, io.Discard, ready)
	}, func(ctx context.Context, conn *lodestar.Conn) { createAndList(ctx, t, conn) })
}

func createAndList(ctx context.Context, t *testing.T, conn *lodestar.Conn) {
	c := orderpb.NewOrderServiceClient(conn)
	o, err := c.CreateOrder(ctx, &orderpb.CreateOrderRequest{UserId: "ada", Item: "book", Quantity: 2})
	if err != nil || o.Id == "" || o.UserId != "ada" || !strings.HasPrefix(o.Instance, "127.0.0.1:") {
		t.Fatalf("CreateOrder: %v, %v", o, err)
	}
	l, err := c.ListOrders(ctx, &orderpb.ListOrdersRequest{UserId: "ada"})
	if err != nil || len(l.Orders) != 1 || l.Orders[0].Id != o.Id || l.Instance != o.Instance {
		t.Fatalf("ListOrders: %v, %v (created %v)", l, err, o)
	}
}
