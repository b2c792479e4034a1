package locality_test

import (
	"fmt"

	"github.com/lodestar-rpc/lodestar/lb/locality"
)

// How traffic spills as a caller's zone loses instances: 3 instances in
// the zone, 3 more in the region, 3 elsewhere.
func ExampleShares() {
	total := [3]int{3, 3, 3}
	for _, readyInZone := range []int{3, 2, 1, 0} {
		s := locality.Shares(total, [3]int{readyInZone, 3, 3}, locality.DefaultOverprovision, locality.DefaultMinReady)
		fmt.Printf("%d of 3 ready in zone: zone %.0f%%, region %.0f%%, elsewhere %.0f%%\n", readyInZone, 100*s[0], 100*s[1], 100*s[2])
	}
	// Output:
	// 3 of 3 ready in zone: zone 100%, region 0%, elsewhere 0%
	// 2 of 3 ready in zone: zone 93%, region 7%, elsewhere 0%
	// 1 of 3 ready in zone: zone 47%, region 53%, elsewhere 0%
	// 0 of 3 ready in zone: zone 0%, region 100%, elsewhere 0%
}
