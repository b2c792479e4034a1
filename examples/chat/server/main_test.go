package main

import (
	"context"
	"io"
	"testing"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/internal/exampletest"
	"github.com/lodestar-rpc/lodestar/examples/proto/chatpb"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

func TestServerRegistersAndAnswers(t *testing.T) {
	exampletest.CheckServer(t, "chat", func(ctx context.Context, args []string, ready chan<- string) error {
		return run(ctx, args, io.Discard, ready)
	}, func(ctx context.Context, conn *lodestar.Conn) { callOnce(ctx, t, conn) })
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
