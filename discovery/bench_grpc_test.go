package discovery_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	etcdresolver "go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/lodestar-rpc/lodestar/discovery"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
)

// timedBuilder wraps a resolver.Builder so that every update its resolver
// gives grpc is counted and timed: how long grpc's own UpdateState (the
// channel and its balancer taking the new list) took.
type timedBuilder struct {
	resolver.Builder
	mu      sync.Mutex
	updates int
	inGrpc  time.Duration
	sizes   []int
	signal  chan struct{}
}

func newTimedBuilder(b resolver.Builder) *timedBuilder {
	return &timedBuilder{Builder: b, signal: make(chan struct{}, 1)}
}

func (b *timedBuilder) Build(t resolver.Target, cc resolver.ClientConn, o resolver.BuildOptions) (resolver.Resolver, error) {
	return b.Builder.Build(t, &timedCC{ClientConn: cc, b: b}, o)
}

type timedCC struct {
	resolver.ClientConn
	b *timedBuilder
}

func (c *timedCC) UpdateState(s resolver.State) error {
	t0 := time.Now()
	err := c.ClientConn.UpdateState(s)
	d := time.Since(t0)
	c.b.mu.Lock()
	c.b.updates++
	c.b.inGrpc += d
	c.b.sizes = append(c.b.sizes, len(s.Endpoints)+len(s.Addresses))
	c.b.mu.Unlock()
	select {
	case c.b.signal <- struct{}{}:
	default:
	}
	return err
}

func (c *timedCC) ParseServiceConfig(s string) *serviceconfig.ParseResult {
	return c.ClientConn.ParseServiceConfig(s)
}

// snapshot returns the updates so far, the time spent in grpc, and the
// size of the last list.
func (b *timedBuilder) snapshot() (updates int, inGrpc time.Duration, last int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.sizes) > 0 {
		last = b.sizes[len(b.sizes)-1]
	}
	return b.updates, b.inGrpc, last
}

// waitSize waits until the last list grpc got has n instances.
func (b *timedBuilder) waitSize(tb testing.TB, n int, timeout time.Duration) time.Time {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if _, _, last := b.snapshot(); last == n {
			return time.Now()
		}
		select {
		case <-b.signal:
		case <-deadline.C:
			_, _, last := b.snapshot()
			tb.Fatalf("no list of %d instances within %s (last: %d)", n, timeout, last)
		}
	}
}

// BenchmarkBurstThroughGrpc: what a burst of separate registrations costs
// a real grpc client. 1,000 live servers on 127.0.0.1 are registered; a
// grpc.ClientConn with round_robin resolves them through one resolver and
// connects to all; then 200 more servers register, one Put each, as a
// rolling restart's registrations arrive. Per resolver it records the
// updates grpc got, the time grpc spent taking them (its UpdateState: the
// channel and round_robin walking the list), and the time from the last
// Put to the list holding all 1,200. The resolvers run one after the
// other, each with its own connection and etcd client.
func BenchmarkBurstThroughGrpc(b *testing.B) {
	singleRun(b, func() { benchBurstThroughGrpc(b) })
}

func benchBurstThroughGrpc(b *testing.B) {
	const (
		n     = 1000
		burst = 200
	)
	c := etcdtest.New(b)
	writer := newClient(b, c.Endpoints())
	servers := testserver.StartN(b, n+burst)
	kvs := make([][2]string, n)
	for i := range kvs {
		k, v := instanceKV(b, benchService, servers[i].Addr, i)
		kvs[i] = [2]string{k, v}
	}
	putTxnBatches(b, writer, kvs)
	conns := func() int64 {
		var sum int64
		for _, s := range servers[:n] {
			sum += s.Conns()
		}
		return sum
	}

	type result struct {
		name     string
		updates  int
		inGrpc   time.Duration
		converge time.Duration
		putting  time.Duration
	}
	var results []result
	for round, sys := range []struct {
		name   string
		target string
		build  func() resolver.Builder
	}{
		{"lodestar", discovery.Target(benchService), func() resolver.Builder {
			rb, err := discovery.NewBuilder(newClient(b, c.Endpoints()))
			if err != nil {
				b.Fatal(err)
			}
			return rb
		}},
		{"etcd naming", etcdNamingTarget, func() resolver.Builder {
			rb, err := etcdresolver.NewBuilder(newClient(b, c.Endpoints()))
			if err != nil {
				b.Fatal(err)
			}
			return rb
		}},
	} {
		tb := newTimedBuilder(sys.build())
		conn, err := grpc.NewClient(sys.target, grpc.WithResolvers(tb),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultServiceConfig(roundRobin))
		if err != nil {
			b.Fatal(err)
		}
		conn.Connect()
		tb.waitSize(b, n, scaleTimeout)
		// Every server connected to before the burst.
		want := int64(n * (round + 1))
		deadline := time.Now().Add(scaleTimeout)
		for conns() < want {
			if time.Now().After(deadline) {
				b.Fatalf("%s: %d of %d connections after %s", sys.name, conns()-int64(n*round), n, scaleTimeout)
			}
			window(50 * time.Millisecond)
		}
		window(2 * discovery.DefaultUpdateInterval) // a quiet spell
		u0, g0, _ := tb.snapshot()
		keys := make([]string, burst)
		t0 := time.Now()
		for i := range burst {
			k, v := instanceKV(b, benchService, servers[n+i].Addr, n+i)
			keys[i] = k
			benchPut(b, writer, k, v)
		}
		tPut := time.Now()
		tAll := tb.waitSize(b, n+burst, scaleTimeout)
		u1, g1, _ := tb.snapshot()
		results = append(results, result{sys.name, u1 - u0, g1 - g0, max(0, tAll.Sub(tPut)), tPut.Sub(t0)})
		for _, k := range keys {
			benchDelete(b, writer, k)
		}
		tb.waitSize(b, n, scaleTimeout)
		conn.Close()
	}

	var t strings.Builder
	fmt.Fprintf(&t, "burst through grpc: %d live servers behind a grpc.ClientConn with round_robin, then %d more registered, one Put each\n", n, burst)
	fmt.Fprintf(&t, "updates = lists grpc got until it had all %d; in grpc = time inside grpc's UpdateState for them; converge = last Put → that list\n", n+burst)
	for _, r := range results {
		fmt.Fprintf(&t, "  %-12s puts took %6.1f ms; %4d updates; in grpc %8.1f ms (%.2f ms each); converge %7.2f ms\n",
			r.name, ms(r.putting), r.updates, ms(r.inGrpc), ms(r.inGrpc)/float64(max(1, r.updates)), ms(r.converge))
	}
	printTable(b, t.String())
	for _, r := range results {
		name := strings.ReplaceAll(r.name, " ", "-")
		b.ReportMetric(float64(r.updates), name+"-updates")
		b.ReportMetric(ms(r.inGrpc), name+"-in-grpc-ms")
	}
}
