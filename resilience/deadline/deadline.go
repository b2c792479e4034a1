// Package deadline gives calls a default deadline when the caller set
// none, so that no call can wait forever on a stuck instance. A deadline
// the caller set is kept as it is (it propagates to the server as grpc
// propagates every deadline).
//
//	d, err := deadline.New(5*time.Second, map[string]time.Duration{
//		"/order.OrderService/CreateOrder": 2 * time.Second,
//	})
//	grpc.NewClient(target, grpc.WithChainUnaryInterceptor(d.UnaryClientInterceptor()))
package deadline

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
)

// Defaults holds the default timeout of every method and of some methods
// ("/pkg.Service/Method", or "/pkg.Service/*" for a whole service).
type Defaults struct {
	all     time.Duration
	methods map[string]time.Duration
}

// New returns defaults: all for every method (0: none), and perMethod for
// some; a malformed method or a negative timeout is an error naming it.
func New(all time.Duration, perMethod map[string]time.Duration) (*Defaults, error) {
	if all < 0 {
		return nil, fmt.Errorf("deadline: default timeout %v: want 0 (none) or more", all)
	}
	d := &Defaults{all: all, methods: map[string]time.Duration{}}
	for m, t := range perMethod {
		if !strings.HasPrefix(m, "/") || strings.Count(m, "/") != 2 || strings.HasSuffix(m, "/") {
			return nil, fmt.Errorf("deadline: method %q: want \"/pkg.Service/Method\" or \"/pkg.Service/*\"", m)
		}
		if t <= 0 {
			return nil, fmt.Errorf("deadline: %s: timeout %v: want more than 0", m, t)
		}
		d.methods[strings.TrimSuffix(m, "*")] = t
	}
	return d, nil
}

// For returns the default timeout of a method, or 0.
func (d *Defaults) For(method string) time.Duration {
	if t, ok := d.methods[method]; ok {
		return t
	}
	if i := strings.LastIndexByte(method, '/'); i > 0 {
		if t, ok := d.methods[method[:i+1]]; ok {
			return t
		}
	}
	return d.all
}

// UnaryClientInterceptor sets the default deadline on unary calls that
// have none.
func (d *Defaults) UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			if t := d.For(method); t > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, t)
				defer cancel()
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
