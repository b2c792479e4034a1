package discovery_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/lodestar-rpc/lodestar/discovery"
	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/embedetcd"
	"github.com/lodestar-rpc/lodestar/registry"
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
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: []string{endpoint}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// A server: a gRPC server on 127.0.0.1, registered as service "user".
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	defer srv.Stop()
	reg, _ := registry.New(cli)
	defer reg.Close()
	if _, err := reg.Register(ctx, registry.Instance{Service: "user", Addr: lis.Addr().String(),
		Metadata: registry.Metadata{Zone: "zone-a"}}); err != nil {
		fmt.Println(err)
		return
	}

	// A client: dial the service by name.
	b, err := discovery.NewBuilder(cli)
	if err != nil {
		fmt.Println(err)
		return
	}
	conn, err := grpc.NewClient("lodestar:///user", grpc.WithResolvers(b),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.Status)
	// Output: SERVING
}
