package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/internal/exampletest"
	"github.com/lodestar-rpc/lodestar/examples/proto/chatpb"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServerRegistersAndAnswers(t *testing.T) {
	c := etcdtest.New(t)
	addr := exampletest.RunServer(t, func(ctx context.Context, args []string, ready chan<- string) error {
		return run(ctx, args, io.Discard, ready)
	}, "--etcd", strings.Join(c.Endpoints(), ","))
	resp, err := c.Client(t).Get(context.Background(), "/services/chat/"+addr)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("registration of %s: %v, %v", addr, resp, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := lodestar.Dial(ctx, "chat", lodestar.WithEtcdEndpoints(c.Endpoints()...), lodestar.WithWaitForReady())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	callOnce(ctx, t, conn)
}

func callOnce(ctx context.Context, t *testing.T, conn *lodestar.Conn) {
	st, err := chatpb.NewChatServiceClient(conn).Subscribe(ctx, &chatpb.SubscribeRequest{Room: "r", Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		_, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("%d messages", n)
	}
}
