package lb_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/leastrequest" // least_request_experimental, for comparison
	_ "google.golang.org/grpc/balancer/ringhash"     // ring_hash_experimental, for comparison
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
	"github.com/lodestar-rpc/lodestar/lb/canary"
	"github.com/lodestar-rpc/lodestar/lb/hash"
	"github.com/lodestar-rpc/lodestar/lb/latency"
	"github.com/lodestar-rpc/lodestar/lb/leastrequest"
	"github.com/lodestar-rpc/lodestar/lb/locality"
	"github.com/lodestar-rpc/lodestar/lb/roundrobin"
	"github.com/lodestar-rpc/lodestar/lb/wrr"
	"github.com/lodestar-rpc/lodestar/registry"
)

// system is one way of calling the servers.
type system struct {
	name   string
	policy string // balancer; "" for a direct dial of the first server
	config any
	keyed  bool // calls carry a hash key in the x-user-id header
}

func (s system) dial(b *testing.B, r *lbtest.Rig) *grpc.ClientConn {
	if s.policy == "" {
		conn, err := grpc.NewClient("passthrough:///"+r.Srv[0].Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		return conn
	}
	return r.Dial(s.policy, s.config)
}

// ringHash is grpc's ring_hash_experimental keyed by the same header.
var ringHash = map[string]any{"requestHashHeader": "x-user-id"}

// BenchmarkOverhead compares, in one run, the per-call cost of every
// lodestar policy with grpc's round_robin (and grpc's own least-request
// and ring-hash policies) over the same 3 in-process servers found through
// discovery, and with a direct dial of one server: 64 concurrent callers,
// in alternating rounds. It prints throughput, its ratio to round_robin,
// and latency percentiles. The hash policies' calls carry a key header,
// which costs by itself: compare them with "round_robin, keyed calls".
//
//	go test -run '^$' -bench Overhead -benchtime 1x -timeout 30m ./lb
func BenchmarkOverhead(b *testing.B) {
	md := registry.Metadata{Zone: "zone-a", Region: "eu", Version: "v1"}
	r := lbtest.New(b, md, md, md)
	systems := []system{
		{name: "direct dial (1 server)"},
		{name: "round_robin (grpc)", policy: "round_robin"},
		{name: "least_request_experimental (grpc)", policy: "least_request_experimental"},
		{name: "round_robin, keyed calls", policy: "round_robin", keyed: true},
		{name: "ring_hash_experimental (grpc)", policy: "ring_hash_experimental", config: ringHash, keyed: true},
		{name: roundrobin.Name + " (Dial's default)", policy: roundrobin.Name},
		{name: wrr.Name, policy: wrr.Name},
		{name: leastrequest.Name, policy: leastrequest.Name},
		{name: latency.Name, policy: latency.Name},
		{name: hash.Name, policy: hash.Name, config: hash.Config{Header: "x-user-id"}, keyed: true},
		{name: locality.Name, policy: locality.Name, config: locality.Config{Zone: "zone-a"}},
		{name: canary.Name + " (10%, none)", policy: canary.Name, config: canary.Config{Version: "v2", Percent: 10}},
	}
	for b.Loop() {
		const rounds = 5
		res := runRounds(b, r, systems, rounds, 2*time.Second, 64, 0)
		fmt.Printf("\n64 callers, health Check on 3 in-process servers, %d rounds of 2 s per system, alternating (medians)\n", rounds)
		printTable(res, 1)
	}
}

// BenchmarkTailSlowInstance: one of three instances answers 10× slower
// than the others (50 ms against 5 ms, then 100 ms against 10 ms); 64
// concurrent callers. It prints p50/p99/p999 per policy
// and the p99 ratio to round_robin; a direct dial of one fast server is
// the floor (what no slow instance at all would give).
//
//	go test -run '^$' -bench TailSlowInstance -benchtime 1x ./lb
func BenchmarkTailSlowInstance(b *testing.B) {
	r := lbtest.New(b, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	systems := []system{
		{name: "round_robin (grpc)", policy: "round_robin"},
		{name: "direct dial (1 fast server, floor)"},
		{name: "least_request_experimental (grpc)", policy: "least_request_experimental"},
		{name: leastrequest.Name, policy: leastrequest.Name},
		{name: latency.Name, policy: latency.Name},
	}
	for b.Loop() {
		for _, base := range []time.Duration{5 * time.Millisecond, 10 * time.Millisecond} {
			r.Srv[0].SetDelay(base) // the direct dial's
			r.Srv[1].SetDelay(base)
			r.Srv[2].SetDelay(10 * base)
			const rounds = 2
			res := runRounds(b, r, systems, rounds, 4*time.Second, 64, 2)
			fmt.Printf("\n64 callers, 3 servers, one answering in %v and two in %v, %d rounds of 4 s per system\n", 10*base, base, rounds)
			fmt.Printf("%-36s %10s %8s %8s %8s %8s %s\n", "", "calls/s", "p50 ms", "p99 ms", "p999 ms", "slow %", "p99 vs round_robin")
			rr := pct(res[0].lat, 0.99)
			for _, x := range res {
				p99 := pct(x.lat, 0.99)
				fmt.Printf("%-36s %10.0f %8.2f %8.2f %8.2f %8.2f %.1f× lower\n", x.name, pct(x.rates, 0.5),
					pct(x.lat, 0.5)/1000, p99/1000, pct(x.lat, 0.999)/1000, 100*x.shareOfWatched, rr/p99)
			}
		}
	}
}

// BenchmarkHashBalance: 100 instances, 100,000 keys, each called once
// through the balancer; load is keys per instance, counted by the servers.
// It prints max/mean load for lodestar's consistent hash and grpc's
// ring_hash_experimental with its default ring.
//
//	go test -run '^$' -bench HashBalance -benchtime 1x ./lb
func BenchmarkHashBalance(b *testing.B) {
	mds := make([]registry.Metadata, 100)
	r := lbtest.New(b, mds...)
	systems := []system{
		{name: hash.Name, policy: hash.Name, config: hash.Config{Header: "x-user-id"}},
		{name: "ring_hash_experimental (grpc)", policy: "ring_hash_experimental", config: ringHash},
	}
	const keys = 100000
	for b.Loop() {
		fmt.Printf("\n100 instances, %d keys, each called once\n%-32s %9s %9s %9s\n", keys, "", "max/mean", "min/mean", "time")
		for _, s := range systems {
			conn := s.dial(b, r)
			sendKeys(b, conn, keys) // connects every instance a key reaches
			before := make([]int64, len(r.Srv))
			for i, sv := range r.Srv {
				before[i] = sv.Calls()
			}
			start := time.Now()
			sendKeys(b, conn, keys)
			took := time.Since(start)
			conn.Close()
			hi, lo := int64(0), int64(keys)
			for i, sv := range r.Srv {
				n := sv.Calls() - before[i]
				hi, lo = max(hi, n), min(lo, n)
			}
			mean := float64(keys) / float64(len(r.Srv))
			fmt.Printf("%-32s %9.3f %9.3f %9s\n", s.name, float64(hi)/mean, float64(lo)/mean, took.Round(time.Millisecond))
		}
	}
}

// sendKeys calls once with each of keys keys, from 64 callers.
func sendKeys(b *testing.B, conn *grpc.ClientConn, keys int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for {
				k := next.Add(1) - 1
				if k >= int64(keys) {
					return
				}
				ctx := metadata.AppendToOutgoingContext(context.Background(), "x-user-id", "user-"+strconv.FormatInt(k, 10))
				if err := testserver.Call(ctx, conn); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

type result struct {
	name           string
	rates          []float64 // calls/s per round
	lat            []float64 // µs, every call
	shareOfWatched float64   // share of calls the watched server answered
}

// runRounds runs each system for d per round, alternating, so drift on a
// shared machine hits all of them. It counts the calls server watch
// answers.
func runRounds(b *testing.B, r *lbtest.Rig, systems []system, rounds int, d time.Duration, callers, watch int) []result {
	res := make([]result, len(systems))
	served := make([]int64, len(systems))
	total := make([]int64, len(systems))
	for range rounds {
		for i, s := range systems {
			conn := s.dial(b, r)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			for k := range 300 { // warm up: connect to every server, let averages settle
				if err := testserver.Call(keyed(ctx, s.keyed, k), conn); err != nil {
					b.Fatal(err)
				}
			}
			cancel()
			c0 := r.Srv[watch].Calls()
			rate, lat := drive(conn, s.keyed, callers, d)
			served[i] += r.Srv[watch].Calls() - c0
			total[i] += int64(len(lat))
			conn.Close()
			res[i].name = s.name
			res[i].rates = append(res[i].rates, rate)
			res[i].lat = append(res[i].lat, lat...)
		}
	}
	for i := range res {
		res[i].shareOfWatched = float64(served[i]) / float64(max(total[i], 1))
		slices.Sort(res[i].lat)
	}
	return res
}

func keyed(ctx context.Context, on bool, k int) context.Context {
	if !on {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "x-user-id", "user-"+strconv.Itoa(k))
}

// drive makes calls from n goroutines for d and returns calls per second
// and every call's latency in µs.
func drive(conn *grpc.ClientConn, keys bool, n int, d time.Duration) (float64, []float64) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	var all []float64
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			var mine []float64
			for k := g; ctx.Err() == nil; k += n {
				start := time.Now()
				if err := testserver.Call(keyed(context.Background(), keys, k), conn); err != nil {
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

// printTable prints throughput and latency per system, with the ratio to
// the system at index base.
func printTable(res []result, base int) {
	fmt.Printf("%-36s %10s %8s %8s %s\n", "", "calls/s", "p50 µs", "p99 µs", "throughput vs round_robin")
	ref := pct(res[base].rates, 0.5)
	for i, x := range res {
		rate := pct(x.rates, 0.5)
		ratio := ""
		if i != base {
			ratio = fmt.Sprintf("%.3f×", rate/ref)
		}
		fmt.Printf("%-36s %10.0f %8.0f %8.0f %s\n", x.name, rate, pct(x.lat, 0.5), pct(x.lat, 0.99), ratio)
	}
}

// pct returns the p-th quantile of v, sorting it.
func pct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[int(p*float64(len(v)-1))]
}
