package lodestar_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
)

// BenchmarkStreamLimit: unary calls taking 10 ms in the handler, from
// 512 and from 1,500 goroutines on one connection, to a NewServer with its
// default stream limit (1,000) and with none (grpc's default), side by
// side. At 512 the limit costs nothing; at 1,500 the calls beyond 1,000
// wait for a stream, which is the limit's purpose.
//
//	go test -run '^$' -bench StreamLimit -benchtime 20000x .
func BenchmarkStreamLimit(b *testing.B) {
	c := etcdtest.New(b)
	for _, callers := range []int{512, 1500} {
		for _, bc := range []struct {
			name string
			opts []lodestar.Option
		}{
			{"default", nil},
			{"unlimited", []lodestar.Option{lodestar.WithServerOptions(grpc.MaxConcurrentStreams(0))}},
		} {
			b.Run(fmt.Sprintf("callers=%d/%s", callers, bc.name), func(b *testing.B) {
				g := newHoldGreeter()
				g.work = 10 * time.Millisecond
				g.open()
				srv := startGreeter(b, c.Endpoints(), g, bc.opts...)
				conn, err := grpc.NewClient("passthrough:///"+srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				client := greeterpb.NewGreeterClient(conn)
				b.SetParallelism((callers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := client.SayHello(context.Background(), &greeterpb.HelloRequest{Name: "b"}); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(g.max.Load()), "max-concurrent")
			})
		}
	}
}
