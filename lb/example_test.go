package lb_test

import (
	"fmt"
	"testing"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/lb/latency"
	"github.com/lodestar-rpc/lodestar/lb/locality"
)

// TestMain checks for goroutines left over, giving those that are ending
// time to end (lbtest.VerifyTestMain).
func TestMain(m *testing.M) { lbtest.VerifyTestMain(m) }

// A locality policy that picks by latency inside each tier.
func ExampleChild() {
	cfg := locality.Config{Zone: "zone-a", Pick: lb.Child(latency.Name, nil)}
	fmt.Println(string(cfg.Pick))
	// Output: {"lodestar_latency":{}}
}
