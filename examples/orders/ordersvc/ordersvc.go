// Package ordersvc is the example OrderService: orders kept in memory by
// user. Each instance holds only the orders of the users routed to it, so
// clients must send every call for a user to the same instance; every
// answer names the instance that holds the user's orders.
package ordersvc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/lodestar-rpc/lodestar/examples/proto/orderpb"
)

// Service implements orderpb.OrderServiceServer.
type Service struct {
	orderpb.UnimplementedOrderServiceServer
	name func() string // how answers name this instance

	mu     sync.Mutex
	orders map[string][]*orderpb.Order // by user id, oldest first
}

// New returns an empty service whose answers name the instance name()
// returns (the server passes its address, known once it listens).
func New(name func() string) *Service {
	return &Service{name: name, orders: map[string][]*orderpb.Order{}}
}

// CreateOrder stores an order for r.UserId on this instance and returns it
// with its id and this instance's name.
func (s *Service) CreateOrder(_ context.Context, r *orderpb.CreateOrderRequest) (*orderpb.Order, error) {
	switch {
	case strings.TrimSpace(r.GetUserId()) == "":
		return nil, status.Error(codes.InvalidArgument, "user_id is empty")
	case strings.TrimSpace(r.GetItem()) == "":
		return nil, status.Error(codes.InvalidArgument, "item is empty")
	case r.GetQuantity() <= 0:
		return nil, status.Errorf(codes.InvalidArgument, "quantity is %d, want at least 1", r.GetQuantity())
	}
	o := &orderpb.Order{
		Id:       fmt.Sprintf("%016x", rand.Uint64()),
		UserId:   r.GetUserId(),
		Item:     r.GetItem(),
		Quantity: r.GetQuantity(),
		Instance: s.name(),
	}
	s.mu.Lock()
	s.orders[o.UserId] = append(s.orders[o.UserId], o)
	s.mu.Unlock()
	return proto.CloneOf(o), nil
}

// ListOrders returns the orders of r.UserId held by this instance, oldest
// first: none if the user's calls were routed elsewhere.
func (s *Service) ListOrders(_ context.Context, r *orderpb.ListOrdersRequest) (*orderpb.ListOrdersResponse, error) {
	if strings.TrimSpace(r.GetUserId()) == "" {
		return nil, status.Error(codes.InvalidArgument, "user_id is empty")
	}
	resp := &orderpb.ListOrdersResponse{Instance: s.name()}
	s.mu.Lock()
	for _, o := range s.orders[r.GetUserId()] {
		resp.Orders = append(resp.Orders, proto.CloneOf(o))
	}
	s.mu.Unlock()
	return resp, nil
}
