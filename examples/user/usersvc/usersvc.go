// Package usersvc is the example UserService: users kept in memory, each
// answer naming the instance that served it.
package usersvc

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/examples/proto/userpb"
)

// Service implements userpb.UserServiceServer.
type Service struct {
	userpb.UnimplementedUserServiceServer
	name string // how answers name this instance

	mu    sync.Mutex
	users map[string]*userpb.User
	next  int
}

// New returns an empty service whose answers say they come from name.
func New(name string) *Service {
	return &Service{name: name, users: map[string]*userpb.User{}}
}

// GetUser returns the user, or NOT_FOUND. Users created on another
// instance are not known here: each instance has its own memory.
func (s *Service) GetUser(_ context.Context, r *userpb.UserRequest) (*userpb.UserResponse, error) {
	if r.UserId == "" {
		return nil, status.Error(codes.InvalidArgument, "user_id is empty")
	}
	s.mu.Lock()
	u, ok := s.users[r.UserId]
	s.mu.Unlock()
	if !ok {
		return &userpb.UserResponse{Success: false, Message: fmt.Sprintf("%s: no user %s", s.name, r.UserId)}, nil
	}
	return &userpb.UserResponse{Success: true, Message: s.name, Data: u}, nil
}

// CreateUser stores a new user and returns it with its id.
func (s *Service) CreateUser(_ context.Context, r *userpb.CreateUserRequest) (*userpb.UserResponse, error) {
	if strings.TrimSpace(r.Name) == "" {
		return nil, status.Error(codes.InvalidArgument, "name is empty")
	}
	s.mu.Lock()
	s.next++
	u := &userpb.User{UserId: fmt.Sprintf("%s-%d", s.name, s.next), Name: r.Name, Email: r.Email}
	s.users[u.UserId] = u
	s.mu.Unlock()
	return &userpb.UserResponse{Success: true, Message: s.name, Data: u}, nil
}
