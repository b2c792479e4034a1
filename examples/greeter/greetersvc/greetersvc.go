// Package greetersvc is the example Greeter service.
package greetersvc

import (
	"context"

	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
)

// Service implements greeterpb.GreeterServer.
type Service struct {
	greeterpb.UnimplementedGreeterServer
	name func() string
}

// New returns a greeter whose answers name the instance name() returns.
func New(name func() string) *Service { return &Service{name: name} }

// SayHello greets r.Name.
func (g *Service) SayHello(_ context.Context, r *greeterpb.HelloRequest) (*greeterpb.HelloResponse, error) {
	return &greeterpb.HelloResponse{Message: "Hello " + r.GetName() + " from " + g.name()}, nil
}
