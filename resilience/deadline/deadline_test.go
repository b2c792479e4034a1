package deadline_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
	"github.com/lodestar-rpc/lodestar/resilience/deadline"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

func TestNewValidates(t *testing.T) {
	for _, c := range []struct {
		all  time.Duration
		m    map[string]time.Duration
		want string
	}{
		{-time.Second, nil, "default timeout -1s"},
		{0, map[string]time.Duration{"Check": time.Second}, `method "Check"`},
		{0, map[string]time.Duration{"/a.B/C": 0}, "/a.B/C: timeout 0s"},
	} {
		if _, err := deadline.New(c.all, c.m); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
	d, err := deadline.New(time.Second, map[string]time.Duration{"/a.B/*": 2 * time.Second, "/a.B/C": 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for m, want := range map[string]time.Duration{"/a.B/C": 3 * time.Second, "/a.B/D": 2 * time.Second, "/x.Y/Z": time.Second} {
		if got := d.For(m); got != want {
			t.Errorf("For(%s) = %v, want %v", m, got, want)
		}
	}
}

// A call without a deadline to a stuck server ends at the default; a call
// with its own deadline keeps it.
func TestDefaultAppliesOnlyWithoutDeadline(t *testing.T) {
	s := testserver.Start(t)
	s.SetDelay(time.Minute)
	d, err := deadline.New(0, map[string]time.Duration{"/grpc.health.v1.Health/Check": 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///"+s.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(d.UnaryClientInterceptor()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The caller sets no deadline; should the default not apply, a
	// watchdog cancels the call after 30 s, which ends it with CANCELED.
	wctx, stop := context.WithCancel(context.Background())
	watchdog := time.AfterFunc(30*time.Second, stop)
	err = testserver.Call(wctx, conn)
	watchdog.Stop()
	stop()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("call without a deadline to a stuck server: %v, want DEADLINE_EXCEEDED from the 100ms default", err)
	}
	s.SetDelay(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := testserver.Call(ctx, conn); err != nil {
		t.Errorf("call with its own longer deadline: %v", err)
	}
}
