// Package lbtest is the common rig of the balancer tests: a real embedded
// etcd, real gRPC servers on 127.0.0.1 registered with metadata, and a
// client connection that finds them through discovery and balances with
// the policy under test.
package lbtest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"

	"github.com/lodestar-rpc/lodestar/discovery"
	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
	"github.com/lodestar-rpc/lodestar/registry"
	"github.com/lodestar-rpc/lodestar/resilience/retry"
)

// Service is the service name the rig registers.
const Service = "user"

// Rig is one etcd, its registrar, and the servers registered so far.
type Rig struct {
	t    testing.TB
	Cli  *clientv3.Client
	Reg  *registry.Registrar
	Srv  []*testserver.Server
	byAd map[string]int
}

// New starts etcd and one server per metadata entry, each registered with
// it.
func New(t testing.TB, md ...registry.Metadata) *Rig {
	t.Helper()
	c := etcdtest.New(t)
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: c.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	reg, err := registry.New(cli, registry.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	r := &Rig{t: t, Cli: cli, Reg: reg, byAd: map[string]int{}}
	for _, m := range md {
		r.Add(m)
	}
	return r
}

// Add starts one more server, registers it with md and returns its index.
func (r *Rig) Add(md registry.Metadata) int {
	r.t.Helper()
	return r.AddWith(md)
}

// AddWith is Add with server options (interceptors).
func (r *Rig) AddWith(md registry.Metadata, opts ...grpc.ServerOption) int {
	r.t.Helper()
	s := testserver.StartWith(r.t, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := r.Reg.Register(ctx, registry.Instance{Service: Service, Addr: s.Addr, Metadata: md}); err != nil {
		r.t.Fatal(err)
	}
	r.Srv = append(r.Srv, s)
	r.byAd[s.Addr] = len(r.Srv) - 1
	return len(r.Srv) - 1
}

// Index returns the index of the server at addr, or -1.
func (r *Rig) Index(addr string) int {
	if i, ok := r.byAd[addr]; ok {
		return i
	}
	return -1
}

// Dial connects to the service with the balancer name and its config
// (nil for none), plus opts, and retries the health Check (idempotent) as
// lodestar.Dial does: on another instance, within a budget.
func (r *Rig) Dial(name string, config any, opts ...grpc.DialOption) *grpc.ClientConn {
	r.t.Helper()
	rt, err := retry.New(retry.Config{Idempotent: func(m string) bool { return m == "/grpc.health.v1.Health/Check" }, MaxAttempts: 4})
	if err != nil {
		r.t.Fatal(err)
	}
	return r.dial(LBConfig(r.t, name, config), append([]grpc.DialOption{grpc.WithChainUnaryInterceptor(rt.UnaryClientInterceptor())}, opts...)...)
}

// DialPlain is Dial without retries.
func (r *Rig) DialPlain(name string, config any, opts ...grpc.DialOption) *grpc.ClientConn {
	r.t.Helper()
	return r.dial(LBConfig(r.t, name, config), opts...)
}

func (r *Rig) dial(sc string, opts ...grpc.DialOption) *grpc.ClientConn {
	r.t.Helper()
	b, err := discovery.NewBuilder(r.Cli)
	if err != nil {
		r.t.Fatal(err)
	}
	conn, err := grpc.NewClient(discovery.Target(Service), append([]grpc.DialOption{grpc.WithResolvers(b),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(sc)}, opts...)...)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { conn.Close() })
	return conn
}

// LBConfig returns a service config selecting the balancer name with
// config (nil for {}), and nothing else.
func LBConfig(t testing.TB, name string, config any) string {
	if config == nil {
		config = struct{}{}
	}
	js, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`{"loadBalancingConfig":[{%q:%s}]}`, name, js)
}

// Call makes one call on conn with ctx and returns the index of the server
// that answered it.
func (r *Rig) Call(ctx context.Context, conn *grpc.ClientConn) (int, error) {
	var p peer.Peer
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := testserver.Call(ctx, conn, grpc.Peer(&p)); err != nil {
		return -1, err
	}
	if p.Addr == nil {
		return -1, fmt.Errorf("no peer address")
	}
	return r.Index(p.Addr.String()), nil
}

// Counts makes n calls with ctx, each of which must succeed, and returns
// how many each server answered.
func (r *Rig) Counts(ctx context.Context, conn *grpc.ClientConn, n int) []int {
	r.t.Helper()
	out := make([]int, len(r.Srv))
	for range n {
		i, err := r.Call(ctx, conn)
		if err != nil {
			r.t.Fatalf("call: %v", err)
		}
		out[i]++
	}
	return out
}

// WaitAll makes calls until every server in want has answered one, or
// fails the test after 30 s (a bound on a hang only).
func (r *Rig) WaitAll(conn *grpc.ClientConn, want ...int) {
	r.t.Helper()
	seen := map[int]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		all := true
		for _, i := range want {
			all = all && seen[i]
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("servers %v did not all answer (seen %v)", want, seen)
		}
		i, err := r.Call(context.Background(), conn)
		if err != nil {
			r.t.Fatalf("call: %v", err)
		}
		seen[i] = true
	}
}
