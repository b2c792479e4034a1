package shed_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
	"github.com/lodestar-rpc/lodestar/resilience/shed"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

func TestConfigValidated(t *testing.T) {
	for _, c := range []struct {
		cfg  shed.Config
		want string
	}{
		{shed.Config{CPUThreshold: 1.5}, "cpuThreshold 1.5"},
		{shed.Config{Window: time.Millisecond}, "window 1ms"},
	} {
		if _, err := shed.New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
}

// The real CPU sampler starts, reads a value in [0, 1], and stops.
func TestSamplerStartsAndStops(t *testing.T) {
	s, err := shed.New(shed.Config{})
	if err != nil {
		t.Fatal(err)
	}
	done, err := s.Allow()
	if err != nil {
		t.Fatalf("idle server shed a call: %v", err)
	}
	done()
	s.Close()
	s.Close()
}

// drive makes calls from n goroutines for d and counts outcomes.
func drive(conn *grpc.ClientConn, n int, d time.Duration) (ok, shed, other int64) {
	var a, b, c atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for ctx.Err() == nil {
				err := testserver.Call(context.Background(), conn)
				switch {
				case err == nil:
					a.Add(1)
				case status.Code(err) == codes.ResourceExhausted && strings.Contains(err.Error(), "shed: server overloaded"):
					b.Add(1)
				default:
					c.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return a.Load(), b.Load(), c.Load()
}

// Learned capacity: 4 callers of 20 ms calls. Over the CPU threshold, 40
// callers see calls beyond that capacity rejected at once; under it, none.
func TestShedsOnlyWhenOverloaded(t *testing.T) {
	var cpu atomic.Uint64 // percent
	s, err := shed.New(shed.Config{CPU: func() float64 { return float64(cpu.Load()) / 100 }, Window: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	srv := testserver.StartWith(t, grpc.ChainUnaryInterceptor(s.UnaryServerInterceptor()))
	srv.SetDelay(20 * time.Millisecond)
	conn, err := grpc.NewClient("passthrough:///"+srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	cpu.Store(95)
	ok, dropped, other := drive(conn, 4, time.Second)
	t.Logf("4 callers, cpu 95%%: %d ok, %d shed, %d other", ok, dropped, other)
	if ok == 0 || other != 0 {
		t.Fatalf("learning phase: %d ok, %d other", ok, other)
	}
	ok, dropped, other = drive(conn, 40, time.Second)
	t.Logf("40 callers, cpu 95%%: %d ok, %d shed, %d other", ok, dropped, other)
	if dropped == 0 || ok == 0 || other != 0 {
		t.Errorf("overloaded: %d ok, %d shed, %d other; want some shed and the rest served", ok, dropped, other)
	}

	cpu.Store(20)
	<-time.After(time.Second) // the one-second cool-down after the last rejection is the event
	ok, dropped, other = drive(conn, 40, time.Second)
	t.Logf("40 callers, cpu 20%%: %d ok, %d shed, %d other", ok, dropped, other)
	if dropped != 0 || other != 0 {
		t.Errorf("under the threshold: %d shed, %d other, want none", dropped, other)
	}
}
