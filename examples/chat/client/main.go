// Command client uses the three streaming calls of ChatService through
// lodestar: a chat (bidirectional), a subscription (server stream) and an
// upload (client stream).
//
//	go run ./examples/chat/client --etcd http://127.0.0.1:2379
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/proto/chatpb"
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := lodestar.Dial(ctx, "chat", lodestar.WithEtcdEndpoints(strings.Split(*etcd, ",")...), lodestar.WithWaitForReady())
	if err != nil {
		return err
	}
	defer conn.Close()
	c := chatpb.NewChatServiceClient(conn)

	// Bidirectional: send three lines, read each answer.
	chat, err := c.SendMessage(ctx)
	if err != nil {
		return err
	}
	for _, line := range []string{"hello", "how are you?", "bye"} {
		if err := chat.Send(&chatpb.Message{Room: "lobby", From: "client", Text: line}); err != nil {
			return err
		}
		m, err := chat.Recv()
		if err != nil {
			return fmt.Errorf("chat: %w", err)
		}
		fmt.Fprintf(out, "chat: %s (from %s)\n", m.Text, m.From)
	}
	if err := chat.CloseSend(); err != nil {
		return err
	}
	if _, err := chat.Recv(); err != io.EOF {
		return fmt.Errorf("chat end: %v", err)
	}

	// Server stream.
	sub, err := c.Subscribe(ctx, &chatpb.SubscribeRequest{Room: "news", Count: 3})
	if err != nil {
		return err
	}
	for {
		m, err := sub.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		fmt.Fprintf(out, "subscribe: %s (from %s)\n", m.Text, m.From)
	}

	// Client stream.
	up, err := c.Upload(ctx)
	if err != nil {
		return err
	}
	for i := range 5 {
		if err := up.Send(&chatpb.Message{Room: "log", Text: fmt.Sprint(i)}); err != nil {
			return err
		}
	}
	sum, err := up.CloseAndRecv()
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	fmt.Fprintf(out, "upload: %d messages received by %s\n", sum.Messages, sum.ServedBy)
	return nil
}
