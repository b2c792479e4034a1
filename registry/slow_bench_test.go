package registry_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"

	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/registry"
)

// BenchmarkSlowLinkRegistration registers 10 instances at once over a link
// to etcd taking 1.6 s each way (a 3.2 s round trip, above the default
// 3 s request timeout), with a registrar's default options and with etcd's
// own endpoints.Manager (a lease granted, then the endpoint added, with no
// timeout but the benchmark's), and reports the seconds until all 10 are
// in etcd for each.
func BenchmarkSlowLinkRegistration(b *testing.B) {
	c := etcdtest.New(b)
	var lodestar, manager time.Duration
	for i := 0; b.Loop(); i++ {
		lodestar += slowRegistrar(b, c, i)
		manager += slowManager(b, c, i)
	}
	b.ReportMetric(lodestar.Seconds()/float64(b.N), "registrar-s/op")
	b.ReportMetric(manager.Seconds()/float64(b.N), "endpoints-manager-s/op")
}

func slowProxyClient(b *testing.B, c *etcdtest.Cluster) *clientv3.Client {
	p := etcdtest.NewProxy(b, c.Endpoints()[0])
	p.SetDelay(1600 * time.Millisecond)
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: []string{p.Endpoint()}, DialTimeout: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close() })
	return cli
}

func slowRegistrar(b *testing.B, c *etcdtest.Cluster, round int) time.Duration {
	cli := slowProxyClient(b, c)
	r, err := registry.New(cli, registry.WithPrefix(fmt.Sprintf("/bench-r%d", round)))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Orphan()
	start := time.Now()
	var wg sync.WaitGroup
	for _, in := range instances(10) {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if _, err := r.Register(ctx, in); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

func slowManager(b *testing.B, c *etcdtest.Cluster, round int) time.Duration {
	cli := slowProxyClient(b, c)
	target := fmt.Sprintf("/bench-m%d/user", round)
	em, err := endpoints.NewManager(cli, target)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, in := range instances(10) {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			g, err := cli.Grant(ctx, 10)
			if err == nil {
				err = em.AddEndpoint(ctx, target+"/"+in.Addr, endpoints.Endpoint{Addr: in.Addr}, clientv3.WithLease(g.ID))
			}
			if err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}
