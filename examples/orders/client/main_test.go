package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/internal/exampletest"
	"github.com/lodestar-rpc/lodestar/examples/orders/ordersvc"
	"github.com/lodestar-rpc/lodestar/examples/proto/orderpb"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

const (
	users    = 20
	perUser  = 3
	nServers = 3
)

// TestClientKeepsEachUserOnOneInstance runs the client against three
// instances, then asks each instance directly which orders it holds: each
// user's orders must all be on the instance the client named as owner, and
// the users must be spread over more than one instance.
func TestClientKeepsEachUserOnOneInstance(t *testing.T) {
	c := etcdtest.New(t)
	addrs := startServers(t, c.Endpoints())

	var out bytes.Buffer
	err := run(context.Background(), []string{
		"--etcd", strings.Join(c.Endpoints(), ","),
		"--users", strconv.Itoa(users), "--orders", strconv.Itoa(perUser),
	}, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	owners := map[string]string{} // user → instance, as the client printed
	for _, m := range regexp.MustCompile(`(?m)^(user-\d+): (?:`+strconv.Itoa(perUser)+`) orders, all on (\S+)$`).FindAllStringSubmatch(out.String(), -1) {
		owners[m[1]] = m[2]
	}
	if len(owners) != users {
		t.Fatalf("the client named the owner of %d users, want %d", len(owners), users)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	used := map[string]int{} // instance → users it owns
	for _, addr := range addrs {
		c := direct(t, addr)
		for user, owner := range owners {
			l, err := c.ListOrders(ctx, &orderpb.ListOrdersRequest{UserId: user})
			if err != nil {
				t.Fatalf("ListOrders %s on %s: %v", user, addr, err)
			}
			want := 0
			if addr == owner {
				want = perUser
				used[addr]++
			}
			if len(l.Orders) != want {
				t.Errorf("%s holds %d orders of %s, want %d (owner %s)", addr, len(l.Orders), user, want, owner)
			}
			for _, o := range l.Orders {
				if o.UserId != user || o.Instance != addr {
					t.Errorf("%s holds %v", addr, o)
				}
			}
		}
	}
	t.Logf("users per instance: %v", used)
	if len(used) < 2 {
		t.Errorf("all %d users are on %d instance(s) of %d, want the users spread", users, len(used), nServers)
	}
}

// TestClientReportsSplitOrders runs the client with calls that carry no
// user id: the orders of the users land on several instances, and the
// client must say so and fail.
func TestClientReportsSplitOrders(t *testing.T) {
	c := etcdtest.New(t)
	startServers(t, c.Endpoints())

	var out bytes.Buffer
	err := run(context.Background(), []string{
		"--etcd", strings.Join(c.Endpoints(), ","),
		"--users", strconv.Itoa(users), "--orders", strconv.Itoa(perUser), "--unkeyed",
	}, &out)
	t.Log(out.String())
	if err == nil || !strings.Contains(err.Error(), "split across instances") {
		t.Fatalf("client: %v, want the split reported", err)
	}
	if !strings.Contains(out.String(), ": SPLIT: created ") {
		t.Errorf("client output names no split user")
	}
}

// startServers starts nServers order instances and returns their
// addresses.
func startServers(t *testing.T, endpoints []string) []string {
	t.Helper()
	var addrs []string
	for range nServers {
		s := exampletest.Serve(t, endpoints, "order", func(s *lodestar.Server) {
			orderpb.RegisterOrderServiceServer(s, ordersvc.New(s.Addr))
		})
		addrs = append(addrs, s.Addr())
	}
	return addrs
}

// direct returns a client of the one instance at addr, not balanced.
func direct(t *testing.T, addr string) orderpb.OrderServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return orderpb.NewOrderServiceClient(conn)
}
