package canary_test

import (
	"encoding/json"
	"fmt"

	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/lb/canary"
	"github.com/lodestar-rpc/lodestar/lb/leastrequest"
)

// A grey release: 5% of calls to v2, the rest to v1, least request inside
// each; callers may pin a version with the x-lodestar-version header. Pass
// the config to lodestar.WithBalancerConfig, or write it in a service
// config as printed.
func ExampleConfig() {
	cfg := canary.Config{Version: "v2", Stable: "v1", Percent: 5, Pick: lb.Child(leastrequest.Name, nil)}
	js, _ := json.Marshal(map[string]any{"loadBalancingConfig": []any{map[string]any{canary.Name: cfg}}})
	fmt.Println(string(js))
	// Output: {"loadBalancingConfig":[{"lodestar_canary":{"version":"v2","stable":"v1","percent":5,"pick":{"lodestar_least_request":{}}}}]}
}
