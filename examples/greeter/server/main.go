// Command server runs one Greeter instance registered in etcd.
//
//	go run ./examples/greeter/server --etcd http://127.0.0.1:2379
//
// With mutual TLS, from certificates "lodestar cert" makes:
//
//	go run ./cmd/lodestar cert --dir certs --services greeter --clients greeter-client
//	go run ./examples/greeter/server --tls-dir certs
//	go run ./examples/greeter/client --tls-dir certs
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/greeter/greetersvc"
	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
	"github.com/lodestar-rpc/lodestar/security"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer, ready chan<- string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(out)
	etcd := fs.String("etcd", "http://127.0.0.1:2379", "etcd endpoints, comma-separated")
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	tlsDir := fs.String("tls-dir", "", "serve over mutual TLS with greeter.pem, greeter-key.pem and ca.pem from this directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts := []lodestar.Option{lodestar.WithEtcdEndpoints(strings.Split(*etcd, ",")...), lodestar.WithListenAddress(*listen)}
	if *tlsDir != "" {
		opts = append(opts, lodestar.WithTLS(security.Config{
			CertFile: filepath.Join(*tlsDir, "greeter.pem"), KeyFile: filepath.Join(*tlsDir, "greeter-key.pem"),
			CAFile: filepath.Join(*tlsDir, "ca.pem")}))
	}
	s, err := lodestar.NewServer("greeter", opts...)
	if err != nil {
		return err
	}
	greeterpb.RegisterGreeterServer(s, greetersvc.New(s.Addr))
	go func() {
		select {
		case <-s.Ready():
			fmt.Fprintf(out, "Greeter serving at %s\n", s.Addr())
			if ready != nil {
				ready <- s.Addr()
			}
		case <-ctx.Done():
		}
	}()
	return s.Serve(ctx)
}
