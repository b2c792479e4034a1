// Command server runs one OrderService instance registered in etcd. Each
// instance keeps the orders of the users routed to it; clients route by
// user id with the consistent-hash balancer (see ../client).
//
//	go run ./examples/orders/server --etcd http://127.0.0.1:2379
//
// Start several: each user's orders land on one of them.
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

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/orders/ordersvc"
	"github.com/lodestar-rpc/lodestar/examples/proto/orderpb"
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := lodestar.NewServer("order",
		lodestar.WithEtcdEndpoints(strings.Split(*etcd, ",")...),
		lodestar.WithListenAddress(*listen),
		lodestar.WithLogger(slog.New(slog.NewTextHandler(out, nil))))
	if err != nil {
		return err
	}
	// Answers name the instance by its address, known once it listens.
	orderpb.RegisterOrderServiceServer(s, ordersvc.New(s.Addr))
	go func() {
		select {
		case <-s.Ready():
			fmt.Fprintf(out, "OrderService serving at %s\n", s.Addr())
			if ready != nil {
				ready <- s.Addr()
			}
		case <-ctx.Done():
		}
	}()
	return s.Serve(ctx)
}
