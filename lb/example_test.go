package lb_test

import (
	"fmt"
	"testing"

	"go.uber.org/goleak"

	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/lb/latency"
	"github.com/lodestar-rpc/lodestar/lb/locality"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A locality policy that picks by latency inside each tier.
func ExampleChild() {
	cfg := locality.Config{Zone: "zone-a", Pick: lb.Child(latency.Name, nil)}
	fmt.Println(string(cfg.Pick))
	// Output: {"lodestar_latency":{}}
}
