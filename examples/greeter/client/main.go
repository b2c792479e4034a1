// Command client says hello to the Greeter service, found through etcd.
//
//	go run ./examples/greeter/client --etcd http://127.0.0.1:2379 --name Ada
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
	"github.com/lodestar-rpc/lodestar/security"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(out)
	etcd := fs.String("etcd", "http://127.0.0.1:2379", "etcd endpoints, comma-separated")
	name := fs.String("name", "world", "who to greet")
	tlsDir := fs.String("tls-dir", "", "call over mutual TLS with <tls-name>.pem, <tls-name>-key.pem and ca.pem from this directory")
	tlsName := fs.String("tls-name", "greeter-client", "name of this client's certificate files")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	opts := []lodestar.Option{lodestar.WithEtcdEndpoints(strings.Split(*etcd, ",")...), lodestar.WithWaitForReady()}
	if *tlsDir != "" {
		opts = append(opts, lodestar.WithTLS(security.Config{
			CertFile: filepath.Join(*tlsDir, *tlsName+".pem"), KeyFile: filepath.Join(*tlsDir, *tlsName+"-key.pem"),
			CAFile: filepath.Join(*tlsDir, "ca.pem")}))
	}
	conn, err := lodestar.Dial(ctx, "greeter", opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	r, err := greeterpb.NewGreeterClient(conn).SayHello(ctx, &greeterpb.HelloRequest{Name: *name})
	if err != nil {
		return fmt.Errorf("SayHello: %w", err)
	}
	fmt.Fprintln(out, r.Message)
	return nil
}
