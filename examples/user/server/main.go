// Command server runs one UserService instance registered in etcd.
//
//	go run ./examples/user/server --etcd http://127.0.0.1:2379 --zone zone-a
//
// Start several; stop one with Ctrl-C and it drains and deregisters
// without failing a call.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/proto/userpb"
	"github.com/lodestar-rpc/lodestar/examples/user/usersvc"
	"github.com/lodestar-rpc/lodestar/registry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends. ready, if not nil, gets the address once
// registered.
func run(ctx context.Context, args []string, out io.Writer, ready chan<- string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(out)
	etcd := fs.String("etcd", "http://127.0.0.1:2379", "etcd endpoints, comma-separated")
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	zone := fs.String("zone", "zone-a", "zone of this instance")
	version := fs.String("version", "v1.0.0", "version of this instance")
	weight := fs.Int("weight", registry.DefaultWeight, "weight of this instance")
	ttl := fs.Duration("ttl", registry.DefaultTTL, "lease TTL of the registration: how long the instance stays in etcd after it dies")
	delay := fs.Duration("delay", 0, "time each call spends in its handler, as if working")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := lodestar.NewServer("user",
		lodestar.WithEtcdEndpoints(strings.Split(*etcd, ",")...),
		lodestar.WithListenAddress(*listen),
		lodestar.WithTTL(*ttl),
		lodestar.WithMetadata(registry.Metadata{Zone: *zone, Version: *version, Weight: *weight}),
		lodestar.WithLogger(slog.New(slog.NewTextHandler(out, nil))))
	if err != nil {
		return err
	}
	svc := usersvc.New("")
	userpb.RegisterUserServiceServer(s, &named{Service: svc, s: s, delay: *delay})
	go func() {
		select {
		case <-s.Ready():
			fmt.Fprintf(out, "UserService serving at %s (zone %s, version %s)\n", s.Addr(), *zone, *version)
			if ready != nil {
				ready <- s.Addr()
			}
		case <-ctx.Done():
		}
	}()
	return s.Serve(ctx)
}

// named answers with the server's address as the instance name, known
// only once it listens, after the delay.
type named struct {
	*usersvc.Service
	s     *lodestar.Server
	delay time.Duration
}

// work takes the delay, or less if the call ends first.
func (n *named) work(ctx context.Context) error {
	if n.delay <= 0 {
		return nil
	}
	t := time.NewTimer(n.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

func (n *named) GetUser(ctx context.Context, r *userpb.UserRequest) (*userpb.UserResponse, error) {
	if err := n.work(ctx); err != nil {
		return nil, err
	}
	resp, err := n.Service.GetUser(ctx, r)
	if resp != nil && resp.Success {
		resp.Message = n.s.Addr()
	}
	return resp, err
}

func (n *named) CreateUser(ctx context.Context, r *userpb.CreateUserRequest) (*userpb.UserResponse, error) {
	if err := n.work(ctx); err != nil {
		return nil, err
	}
	resp, err := n.Service.CreateUser(ctx, r)
	if resp != nil {
		resp.Message = n.s.Addr()
	}
	return resp, err
}
