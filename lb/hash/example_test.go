package hash_test

import (
	"context"
	"fmt"

	"github.com/lodestar-rpc/lodestar/lb/hash"
)

// Which instance owns a key, computed offline: the same answer every
// client with these instances gets.
func ExampleTable() {
	members := []hash.Member{
		{Name: "127.0.0.1:7001", Weight: 100},
		{Name: "127.0.0.1:7002", Weight: 100},
		{Name: "127.0.0.1:7003", Weight: 100},
	}
	table := hash.Table(members, hash.TableSize(len(members)))
	for _, user := range []string{"alice", "bob", "carol", "dave"} {
		fmt.Println(user, "→", members[table[hash.Sum(user)%uint64(len(table))]].Name)
	}
	// Output:
	// alice → 127.0.0.1:7003
	// bob → 127.0.0.1:7003
	// carol → 127.0.0.1:7002
	// dave → 127.0.0.1:7001
}

// Calls made with this context go to the instance owning user-42.
func ExampleWithKey() {
	ctx := hash.WithKey(context.Background(), "user-42")
	_ = ctx // pass ctx to the generated client's method
	fmt.Println(hash.Name)
	// Output: lodestar_consistent_hash
}
