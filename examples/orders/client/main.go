// Command client places orders with the sharded OrderService through
// lodestar, routing every call by user id with the consistent-hash
// balancer: it creates a few orders for several users, lists each user's
// orders, and prints which instance owns each user. Every order of a user
// must be on that one instance; the client exits 1 if a user's orders are
// split across instances.
//
//	go run ./examples/orders/client --etcd http://127.0.0.1:2379 --users 8
//
// Calls made right after Dial are safe: a call whose owner is still
// connecting waits for it rather than landing on another instance.
//
// With --unkeyed the calls carry no user id, so the balancer picks any
// instance for each call and the orders split: the client says so and
// exits 1.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/proto/orderpb"
	"github.com/lodestar-rpc/lodestar/lb/hash"
)

// userHeader is the metadata header that carries the user id, the key the
// balancer hashes to pick the instance.
const userHeader = "x-user-id"

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(out)
	etcd := fs.String("etcd", "http://127.0.0.1:2379", "etcd endpoints, comma-separated")
	users := fs.Int("users", 5, "users to place orders for")
	perUser := fs.Int("orders", 3, "orders to create per user")
	unkeyed := fs.Bool("unkeyed", false, "send calls without the user id (to see the orders split)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *users < 1 || *perUser < 1 {
		return fmt.Errorf("--users %d, --orders %d: want at least 1 of each", *users, *perUser)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The balancer hashes the x-user-id header of each call to pick the
	// instance, the same one for every call with that user id and in every
	// client, for as long as the instances stay the same (adding or removing
	// one of N moves about 1/N of the users).
	conn, err := lodestar.Dial(ctx, "order",
		lodestar.WithEtcdEndpoints(strings.Split(*etcd, ",")...),
		lodestar.WithBalancerConfig(hash.Name, hash.Config{Header: userHeader}),
		lodestar.WithWaitForReady())
	if err != nil {
		return err
	}
	defer conn.Close()
	c := orderpb.NewOrderServiceClient(conn)
	key := forUser
	if *unkeyed {
		key = func(ctx context.Context, _ string) context.Context { return ctx }
	}

	ids := make([]string, *users)
	for i := range ids {
		ids[i] = fmt.Sprintf("user-%d", i+1)
	}
	items := []string{"book", "lamp", "mug", "pen", "chair"}
	created := map[string][]*orderpb.Order{}
	for n := range *perUser {
		for i, u := range ids {
			o, err := c.CreateOrder(key(ctx, u), &orderpb.CreateOrderRequest{
				UserId:   u,
				Item:     items[(i+n)%len(items)],
				Quantity: int32(n + 1),
			})
			if err != nil {
				return fmt.Errorf("CreateOrder for %s: %w", u, err)
			}
			created[u] = append(created[u], o)
		}
	}

	owners := map[string][]string{} // instance → the users it owns
	var split []string
	for _, u := range ids {
		l, err := c.ListOrders(key(ctx, u), &orderpb.ListOrdersRequest{UserId: u})
		if err != nil {
			return fmt.Errorf("ListOrders for %s: %w", u, err)
		}
		if problem := check(created[u], l); problem != "" {
			fmt.Fprintf(out, "%s: SPLIT: %s\n", u, problem)
			split = append(split, u)
			continue
		}
		fmt.Fprintf(out, "%s: %d orders, all on %s\n", u, len(created[u]), l.Instance)
		owners[l.Instance] = append(owners[l.Instance], u)
	}

	fmt.Fprintf(out, "%d of %d users have all their orders on one instance; owners:\n", len(ids)-len(split), len(ids))
	for _, in := range slices.Sorted(maps.Keys(owners)) {
		fmt.Fprintf(out, "  %s owns %s\n", in, strings.Join(owners[in], ", "))
	}
	if len(split) > 0 {
		return fmt.Errorf("the orders of %d of %d users are split across instances: %s",
			len(split), len(ids), strings.Join(split, ", "))
	}
	return nil
}

// forUser returns ctx with userID as the key the balancer hashes for the
// call. It sets the x-user-id header the balancer was configured with,
// which works from any language and which the server sees too. In Go the
// key can also be set for the balancer alone, and it then wins over the
// header:
//
//	return hash.WithKey(ctx, userID)
func forUser(ctx context.Context, userID string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, userHeader, userID)
}

// check says how a user's orders are split, or "" if every order created
// was created on, and listed by, the one instance that answered ListOrders.
func check(created []*orderpb.Order, l *orderpb.ListOrdersResponse) string {
	on := map[string]int{} // instance → orders created there
	for _, o := range created {
		on[o.Instance]++
	}
	listed := map[string]bool{}
	for _, o := range l.Orders {
		listed[o.Id] = true
	}
	found := 0
	for _, o := range created {
		if listed[o.Id] {
			found++
		}
	}
	if len(on) == 1 && on[l.Instance] == len(created) && found == len(created) {
		return ""
	}
	where := make([]string, 0, len(on))
	for in, n := range on {
		where = append(where, fmt.Sprintf("%d on %s", n, in))
	}
	slices.Sort(where)
	return fmt.Sprintf("created %s; ListOrders on %s found %d of %d",
		strings.Join(where, ", "), l.Instance, found, len(created))
}
