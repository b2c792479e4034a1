package registry_test

import (
	"context"
	"fmt"
	"os"
	"time"

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

	r, err := registry.New(cli, registry.WithTTL(10*time.Second),
		registry.WithEventHandler(func(ev registry.Event) {
			if ev.Kind == registry.EventRegistered {
				fmt.Println("event:", ev.Kind, "instances:", ev.Instances)
			}
		}))
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key, err := r.Register(ctx, registry.Instance{
		Service:  "user",
		Addr:     "127.0.0.1:50051",
		Metadata: registry.Metadata{Version: "v1.4.2", Zone: "zone-a"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	resp, _ := cli.Get(ctx, key)
	fmt.Println(key)
	fmt.Println(string(resp.Kvs[0].Value))

	if err := r.Drain(ctx, "user", "127.0.0.1:50051"); err != nil {
		fmt.Println(err)
	}
	resp, _ = cli.Get(ctx, key)
	_, md, _ := registry.Decode(resp.Kvs[0].Value)
	fmt.Println("status:", md.Status)

	if err := r.Close(); err != nil {
		fmt.Println(err)
	}
	resp, _ = cli.Get(ctx, key)
	fmt.Println("after Close:", len(resp.Kvs), "keys")
	// Output:
	// event: registered instances: 1
	// /services/user/127.0.0.1:50051
	// {"Addr":"127.0.0.1:50051","Metadata":{"version":"v1.4.2","zone":"zone-a","weight":100,"status":"serving"}}
	// status: draining
	// after Close: 0 keys
}

func ExampleInstance_invalid() {
	cli, _ := etcdclient.New(etcdclient.Config{}) // not contacted: the instance is refused first
	defer cli.Close()
	r, _ := registry.New(cli)
	defer r.Orphan()
	_, err := r.Register(context.Background(), registry.Instance{Service: "user/v2", Addr: "127.0.0.1:50051"})
	fmt.Println(err)
	_, err = r.Register(context.Background(), registry.Instance{Service: "user", Addr: "0.0.0.0:50051"})
	fmt.Println(err)
	// Output:
	// registry: service name "user/v2" contains '/', which would change the key layout
	// registry: address "0.0.0.0:50051" of service "user": host 0.0.0.0 is unspecified: clients cannot dial it; use a routable address
}
