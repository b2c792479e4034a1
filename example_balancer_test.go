package lodestar_test

import (
	"context"
	"fmt"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/lb/canary"
	"github.com/lodestar-rpc/lodestar/lb/latency"
	"github.com/lodestar-rpc/lodestar/lb/locality"
)

// Policies compose: 10% of calls to the v2 canary, the rest to v1; on
// either side prefer the caller's zone, and inside it pick by latency.
// A config the policy refuses fails Dial with an error naming the field.
func ExampleWithBalancerConfig() {
	cfg := canary.Config{
		Version: "v2", Stable: "v1", Percent: 10,
		Pick: lb.Child(locality.Name, locality.Config{
			Zone: "zone-a", Region: "eu-west",
			Pick: lb.Child(latency.Name, nil),
		}),
	}
	conn, err := lodestar.Dial(context.Background(), "order",
		lodestar.WithEtcdEndpoints("http://127.0.0.1:2379"), lodestar.WithBalancerConfig(canary.Name, cfg))
	if err != nil {
		fmt.Println(err)
		return
	}
	conn.Close()
	fmt.Println("dialled")

	cfg.Percent = 150
	_, err = lodestar.Dial(context.Background(), "order",
		lodestar.WithEtcdEndpoints("http://127.0.0.1:2379"), lodestar.WithBalancerConfig(canary.Name, cfg))
	fmt.Println(err)
	// Output:
	// dialled
	// lodestar: dial order: grpc: the provided default service config is invalid: error parsing config for policy "lodestar_canary": lodestar_canary: percent 150: want 0 to 100
}
