package lodestar_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
	"github.com/lodestar-rpc/lodestar/internal/embedetcd"
)

func Example() {
	// An embedded etcd for the example; in production, your etcd cluster.
	dir, _ := os.MkdirTemp("", "example-*")
	defer os.RemoveAll(dir)
	etcd, endpoint, err := embedetcd.StartSingle(context.Background(), dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()

	// The server: register the implementation, serve until ctx ends.
	s, err := lodestar.NewServer("greeter", lodestar.WithEtcdEndpoints(endpoint))
	if err != nil {
		fmt.Println(err)
		return
	}
	greeterpb.RegisterGreeterServer(s, greeter{})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	<-s.Ready()
	defer func() { stop(); <-served }() // on early returns

	// The client: dial the service by name.
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := lodestar.Dial(dctx, "greeter", lodestar.WithEtcdEndpoints(endpoint), lodestar.WithWaitForReady())
	if err != nil {
		fmt.Println(err)
		return
	}
	r, err := greeterpb.NewGreeterClient(conn).SayHello(dctx, &greeterpb.HelloRequest{Name: "lodestar"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.Message)
	conn.Close()

	stop() // graceful: drain, stop, deregister
	err = <-served
	served <- err // for the deferred wait
	fmt.Println("shutdown:", err)
	// Output:
	// Hello lodestar
	// shutdown: <nil>
}
