package wrr_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lodestar-rpc/lodestar/discovery"
	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
	"github.com/lodestar-rpc/lodestar/lb/wrr"
	"github.com/lodestar-rpc/lodestar/registry"
)

// BenchmarkOverhead compares, in one run, the per-call cost of this policy
// with grpc's round_robin over the same 3 in-process servers found through
// discovery, and with a direct dial of one server: 64 concurrent callers,
// in alternating rounds. It prints throughput and latency percentiles.
//
//	go test -run '^$' -bench Overhead -benchtime 1x ./lb/wrr
func BenchmarkOverhead(b *testing.B) {
	c := etcdtest.New(b)
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: c.Endpoints()})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	reg, err := registry.New(cli)
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	srv := testserver.StartN(b, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range srv {
		if _, err := reg.Register(ctx, registry.Instance{Service: "user", Addr: s.Addr}); err != nil {
			b.Fatal(err)
		}
	}
	res, err := discovery.NewBuilder(cli)
	if err != nil {
		b.Fatal(err)
	}
	type system struct {
		name   string
		target string
		opts   []grpc.DialOption
	}
	lbOpt := func(name string) grpc.DialOption {
		return grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, name))
	}
	systems := []system{
		{"direct dial (1 server)", "passthrough:///" + srv[0].Addr, nil},
		{"round_robin", discovery.Target("user"), []grpc.DialOption{grpc.WithResolvers(res), lbOpt("round_robin")}},
		{wrr.Name, discovery.Target("user"), []grpc.DialOption{grpc.WithResolvers(res), lbOpt(wrr.Name)}},
	}
	for b.Loop() {
		// Three rounds, systems alternating, so drift on a shared machine
		// hits all of them; each figure is the median of its rounds.
		const rounds = 3
		rates := make([][]float64, len(systems))
		lats := make([][]float64, len(systems))
		for range rounds {
			for i, s := range systems {
				conn, err := grpc.NewClient(s.target, append(s.opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
				if err != nil {
					b.Fatal(err)
				}
				wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
				for range 100 { // warm up: connect to every server
					if err := testserver.Call(wctx, conn); err != nil {
						b.Fatal(err)
					}
				}
				wcancel()
				rate, lat := drive(conn, 64, 2*time.Second)
				conn.Close()
				rates[i] = append(rates[i], rate)
				lats[i] = append(lats[i], lat...)
			}
		}
		fmt.Printf("\n64 callers, health Check on 3 in-process servers, %d rounds of 2 s per system (medians)\n%-32s %12s %9s %9s\n",
			rounds, "", "calls/s", "p50 µs", "p99 µs")
		rr := pct(rates[1], 0.5)
		for i, s := range systems {
			rate := pct(rates[i], 0.5)
			ratio := ""
			if i != 1 {
				ratio = fmt.Sprintf("  %.3f× round_robin", rate/rr)
			}
			fmt.Printf("%-32s %12.0f %9.0f %9.0f%s\n", s.name, rate, pct(lats[i], 0.50), pct(lats[i], 0.99), ratio)
		}
	}
}

// drive makes calls from n goroutines for d and returns calls per second
// and every call's latency in µs.
func drive(conn *grpc.ClientConn, n int, d time.Duration) (float64, []float64) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	var all []float64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			var mine []float64
			for ctx.Err() == nil {
				start := time.Now()
				if err := testserver.Call(context.Background(), conn); err != nil {
					continue
				}
				mine = append(mine, float64(time.Since(start).Microseconds()))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return float64(len(all)) / d.Seconds(), all
}

func pct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[int(p*float64(len(v)-1))]
}
