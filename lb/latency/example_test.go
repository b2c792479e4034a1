package latency_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/lb/latency"
)

// Faster reaction than the defaults: averages over 500ms, probes every
// 200ms. Pass the config to lodestar.WithBalancerConfig(latency.Name, cfg).
func ExampleConfig() {
	cfg := latency.Config{Decay: lb.Duration(500 * time.Millisecond), ProbeInterval: lb.Duration(200 * time.Millisecond)}
	js, _ := json.Marshal(cfg)
	fmt.Println(string(js))
	// Output: {"decay":"500ms","probeInterval":"200ms"}
}
