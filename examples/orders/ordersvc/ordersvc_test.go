package ordersvc

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/examples/proto/orderpb"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

func name() string { return "127.0.0.1:1" }

func TestCreateOrderRefusesBadInput(t *testing.T) {
	s := New(name)
	for _, tc := range []struct {
		req   *orderpb.CreateOrderRequest
		field string
	}{
		{&orderpb.CreateOrderRequest{Item: "book", Quantity: 1}, "user_id"},
		{&orderpb.CreateOrderRequest{UserId: " ", Item: "book", Quantity: 1}, "user_id"},
		{&orderpb.CreateOrderRequest{UserId: "ada", Quantity: 1}, "item"},
		{&orderpb.CreateOrderRequest{UserId: "ada", Item: "book"}, "quantity"},
		{&orderpb.CreateOrderRequest{UserId: "ada", Item: "book", Quantity: -2}, "quantity"},
	} {
		o, err := s.CreateOrder(context.Background(), tc.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.field) {
			t.Errorf("CreateOrder(%v) = %v, %v; want InvalidArgument naming %s", tc.req, o, err, tc.field)
		}
	}
	if _, err := s.ListOrders(context.Background(), &orderpb.ListOrdersRequest{}); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(status.Convert(err).Message(), "user_id") {
		t.Errorf("ListOrders without user_id: %v; want InvalidArgument naming user_id", err)
	}
	if l, _ := s.ListOrders(context.Background(), &orderpb.ListOrdersRequest{UserId: "ada"}); len(l.GetOrders()) != 0 {
		t.Errorf("refused orders were stored: %v", l)
	}
}

func TestOrdersAreKeptByUser(t *testing.T) {
	s := New(name)
	ctx := context.Background()
	var ids []string
	for _, r := range []*orderpb.CreateOrderRequest{
		{UserId: "ada", Item: "book", Quantity: 1},
		{UserId: "bob", Item: "lamp", Quantity: 2},
		{UserId: "ada", Item: "mug", Quantity: 3},
	} {
		o, err := s.CreateOrder(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if o.Id == "" || o.UserId != r.UserId || o.Item != r.Item || o.Quantity != r.Quantity || o.Instance != name() {
			t.Fatalf("CreateOrder(%v) = %v", r, o)
		}
		if r.UserId == "ada" {
			ids = append(ids, o.Id)
		}
	}
	l, err := s.ListOrders(ctx, &orderpb.ListOrdersRequest{UserId: "ada"})
	if err != nil {
		t.Fatal(err)
	}
	if l.Instance != name() || len(l.Orders) != 2 || l.Orders[0].Id != ids[0] || l.Orders[1].Id != ids[1] ||
		l.Orders[0].Item != "book" || l.Orders[1].Item != "mug" {
		t.Errorf("ListOrders(ada) = %v, want orders %v in order", l, ids)
	}
	if l, err := s.ListOrders(ctx, &orderpb.ListOrdersRequest{UserId: "carol"}); err != nil || len(l.Orders) != 0 {
		t.Errorf("ListOrders(carol) = %v, %v; want no orders", l, err)
	}
}
