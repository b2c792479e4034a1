package resilience_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
	"github.com/lodestar-rpc/lodestar/lb/roundrobin"
	"github.com/lodestar-rpc/lodestar/registry"
	"github.com/lodestar-rpc/lodestar/resilience/deadline"
	"github.com/lodestar-rpc/lodestar/resilience/flow"
	"github.com/lodestar-rpc/lodestar/resilience/recovery"
	"github.com/lodestar-rpc/lodestar/resilience/retry"
)

const check = "/grpc.health.v1.Health/Check"

// defaults returns the client interceptors lodestar.Dial installs:
// retries (health Check declared idempotent).
func defaults(b *testing.B) []grpc.UnaryClientInterceptor {
	r, err := retry.New(retry.Config{Idempotent: func(m string) bool { return m == check }, MaxAttempts: 4})
	if err != nil {
		b.Fatal(err)
	}
	return []grpc.UnaryClientInterceptor{r.UnaryClientInterceptor()}
}

// withDeadline is the default-deadline interceptor (WithTimeout).
func withDeadline(b *testing.B) grpc.UnaryClientInterceptor {
	d, err := deadline.New(30*time.Second, nil)
	if err != nil {
		b.Fatal(err)
	}
	return d.UnaryClientInterceptor()
}

// serverChain returns the server interceptors lodestar.NewServer
// installs: recovery and flow (with a rule on another method, so the
// lookup runs).
func serverChain(b *testing.B) grpc.ServerOption {
	lim, err := flow.New(flow.Rule{Method: "/x.Y/Z", QPS: 10})
	if err != nil {
		b.Fatal(err)
	}
	return grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(nil), lim.UnaryServerInterceptor())
}

// BenchmarkInterceptorOverhead: the client and server chains lodestar
// installs by default against none, on a healthy path: 3 in-process
// servers each, 64 callers, alternating rounds.
//
//	go test -run '^$' -bench InterceptorOverhead -benchtime 1x ./resilience
func BenchmarkInterceptorOverhead(b *testing.B) {
	plain := lbtest.New(b)
	with := lbtest.New(b)
	for range 3 {
		plain.Add(registry.Metadata{})
		with.AddWith(registry.Metadata{}, serverChain(b))
	}
	systems := []struct {
		name     string
		dial     func() *grpc.ClientConn
		deadline bool // the caller sets a deadline on each call
	}{
		{"no interceptors", func() *grpc.ClientConn { return plain.DialPlain(roundrobin.Name, nil) }, false},
		{"no interceptors, caller sets deadlines", func() *grpc.ClientConn { return plain.DialPlain(roundrobin.Name, nil) }, true},
		{"server chain only", func() *grpc.ClientConn { return with.DialPlain(roundrobin.Name, nil) }, false},
		{"client default-deadline interceptor", func() *grpc.ClientConn {
			return plain.DialPlain(roundrobin.Name, nil, grpc.WithChainUnaryInterceptor(withDeadline(b)))
		}, false},
		{"client retry only", func() *grpc.ClientConn {
			return plain.DialPlain(roundrobin.Name, nil, grpc.WithChainUnaryInterceptor(defaults(b)...))
		}, false},
		{"lodestar defaults (client + server)", func() *grpc.ClientConn {
			return with.DialPlain(roundrobin.Name, nil, grpc.WithChainUnaryInterceptor(defaults(b)...))
		}, false},
	}
	for b.Loop() {
		const rounds = 5
		rates := make([][]float64, len(systems))
		lats := make([][]float64, len(systems))
		for range rounds {
			for i, s := range systems {
				conn := s.dial()
				warm(b, conn)
				rate, lat, _ := drive(conn, 64, 2*time.Second, s.deadline)
				conn.Close()
				rates[i] = append(rates[i], rate)
				lats[i] = append(lats[i], lat...)
			}
		}
		fmt.Printf("\nhealthy path, 64 callers, 3 servers, %d rounds of 2 s, alternating (medians)\n%-38s %10s %8s %8s %s\n", rounds, "", "calls/s", "p50 µs", "p99 µs", "vs none")
		for i, s := range systems {
			fmt.Printf("%-38s %10.0f %8.0f %8.0f %.3f×\n", s.name, pct(rates[i], 0.5), pct(lats[i], 0.5), pct(lats[i], 0.99), pct(rates[i], 0.5)/pct(rates[0], 0.5))
		}
	}
}

// BenchmarkOneInstanceFailingHalf: one of three instances fails half of
// its calls with UNAVAILABLE; success rate and latency without any
// resilience (grpc round_robin, no retries) and with lodestar's defaults.
//
//	go test -run '^$' -bench OneInstanceFailingHalf -benchtime 1x ./resilience
func BenchmarkOneInstanceFailingHalf(b *testing.B) {
	r := lbtest.New(b, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	r.Srv[0].FailSome(codes.Unavailable, 1, 2)
	systems := []struct {
		name string
		dial func() *grpc.ClientConn
	}{
		{"no resilience (grpc round_robin)", func() *grpc.ClientConn { return r.DialPlain("round_robin", nil) }},
		{"lodestar defaults", func() *grpc.ClientConn {
			return r.DialPlain(roundrobin.Name, nil, grpc.WithChainUnaryInterceptor(defaults(b)...))
		}},
	}
	for b.Loop() {
		fmt.Printf("\none of 3 instances failing half its calls, 64 callers, 3 rounds of 2 s\n%-34s %10s %10s %8s %8s\n", "", "calls", "succeeded", "p50 µs", "p99 µs")
		for _, s := range systems {
			var lat []float64
			var total, failed int
			for range 3 {
				conn := s.dial()
				_, l, f := drive(conn, 64, 2*time.Second, false)
				conn.Close()
				lat = append(lat, l...)
				total += len(l) + f
				failed += f
			}
			fmt.Printf("%-34s %10d %9.3f%% %8.0f %8.0f\n", s.name, total, 100*float64(total-failed)/float64(total), pct(lat, 0.5), pct(lat, 0.99))
		}
	}
}

func warm(b *testing.B, conn *grpc.ClientConn) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 100 {
		if err := testserver.Call(ctx, conn); err != nil {
			b.Fatal(err)
		}
	}
}

// drive makes calls from n goroutines for d, each with a 30 s deadline if
// withDeadline: calls per second, latencies of the successful calls in
// µs, and the number that failed.
func drive(conn *grpc.ClientConn, n int, d time.Duration, withDeadline bool) (float64, []float64, int) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	var all []float64
	failed := 0
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			var mine []float64
			bad := 0
			for ctx.Err() == nil {
				start := time.Now()
				cctx, ccancel := context.Background(), context.CancelFunc(func() {})
				if withDeadline {
					cctx, ccancel = context.WithTimeout(cctx, 30*time.Second)
				}
				err := testserver.Call(cctx, conn)
				ccancel()
				if err != nil {
					bad++
					continue
				}
				mine = append(mine, float64(time.Since(start).Microseconds()))
			}
			mu.Lock()
			all = append(all, mine...)
			failed += bad
			mu.Unlock()
		})
	}
	wg.Wait()
	return float64(len(all)) / d.Seconds(), all, failed
}

func pct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[int(p*float64(len(v)-1))]
}
