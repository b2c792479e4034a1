// Command server runs one ChatService instance registered in etcd: a
// bidirectional echo chat, a room subscription (server stream) and an
// upload (client stream).
//
//	go run ./examples/chat/server --etcd http://127.0.0.1:2379
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/chat/chatsvc"
	"github.com/lodestar-rpc/lodestar/examples/proto/chatpb"
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := lodestar.NewServer("chat", lodestar.WithEtcdEndpoints(strings.Split(*etcd, ",")...), lodestar.WithListenAddress(*listen))
	if err != nil {
		return err
	}
	chatpb.RegisterChatServiceServer(s, chatsvc.New(s.Addr))
	go func() {
		select {
		case <-s.Ready():
			fmt.Fprintf(out, "ChatService serving at %s\n", s.Addr())
			if ready != nil {
				ready <- s.Addr()
			}
		case <-ctx.Done():
		}
	}()
	return s.Serve(ctx)
}
