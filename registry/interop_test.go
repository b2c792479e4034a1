package registry_test

import (
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	etcdresolver "go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/registry"
)

// startHealthServer runs a real gRPC server on 127.0.0.1 that answers
// grpc.health.v1 Check for the service name "user".
func startHealthServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("user", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// TestEtcdNamingReadsOurRegistration: etcd's endpoints.Manager lists a
// registrar's instance, and etcd's gRPC resolver dials it.
func TestEtcdNamingReadsOurRegistration(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	r := newRegistrar(t, cli, nil)
	addr := startHealthServer(t)
	key, err := r.Register(ctxT(t, 5*time.Second), registry.Instance{Service: "user", Addr: addr,
		Metadata: registry.Metadata{Version: "v3", Zone: "z1"}})
	if err != nil {
		t.Fatal(err)
	}

	em, err := endpoints.NewManager(cli, "/services/user")
	if err != nil {
		t.Fatal(err)
	}
	list, err := em.List(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if ep, ok := list[key]; !ok || ep.Addr != addr {
		t.Fatalf("endpoints.Manager lists %v, want %s → %s", list, key, addr)
	}
	md, ok := list[key].Metadata.(map[string]any)
	if !ok || md["version"] != "v3" || md["zone"] != "z1" {
		t.Errorf("metadata as etcd sees it: %#v", list[key].Metadata)
	}

	b, err := etcdresolver.NewBuilder(cli)
	if err != nil {
		t.Fatal(err)
	}
	// etcd's resolver strips one leading '/' from the target path, so the
	// key prefix "/services/user" is the target "etcd:////services/user".
	conn, err := grpc.NewClient("etcd:////services/user", grpc.WithResolvers(b),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := ctxT(t, 10*time.Second)
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "user"}, grpc.WaitForReady(true))
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("call through etcd's resolver: %v, %v", resp, err)
	}
}

// TestWeReadEtcdNamingRegistration: a value written by etcd's
// endpoints.Manager decodes, with default metadata, and sits at the key
// layout we use.
func TestWeReadEtcdNamingRegistration(t *testing.T) {
	c := etcdtest.New(t)
	cli := c.Client(t)
	em, err := endpoints.NewManager(cli, "/services/user")
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 5*time.Second)
	lease, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if err := em.AddEndpoint(ctx, "/services/user/e1", endpoints.Endpoint{Addr: "127.0.0.1:7001"}, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if err := em.AddEndpoint(ctx, "/services/user/e2", endpoints.Endpoint{Addr: "127.0.0.1:7002", Metadata: map[string]any{"weight": 5, "zone": "z2"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, registry.ServicePrefix("/services", "user"), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 2 {
		t.Fatalf("got %d keys", len(resp.Kvs))
	}
	want := []struct {
		id, addr string
		weight   int
		zone     string
	}{{"e1", "127.0.0.1:7001", registry.DefaultWeight, ""}, {"e2", "127.0.0.1:7002", 5, "z2"}}
	for i, kv := range resp.Kvs {
		svc, id, err := registry.ParseKey("/services", string(kv.Key))
		if err != nil || svc != "user" || id != want[i].id {
			t.Errorf("ParseKey(%s) = %s, %s, %v", kv.Key, svc, id, err)
		}
		addr, md, err := registry.Decode(kv.Value)
		if err != nil || addr != want[i].addr || md.Weight != want[i].weight || md.Zone != want[i].zone || md.Status != registry.StatusServing {
			t.Errorf("Decode(%s) = %s %+v %v", kv.Value, addr, md, err)
		}
	}
}
