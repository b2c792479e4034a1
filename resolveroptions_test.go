package lodestar_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/discovery"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
)

// WithEtcdRequestTimeout reaches the resolver Dial builds: with a bound no
// etcd request can meet, the list fails for want of time, as the event
// handler given with WithResolverOptions reports; a bound that is not
// positive is refused by Dial, naming it.
func TestDialPassesResolverOptions(t *testing.T) {
	c := etcdtest.New(t)
	startInstance(t, c.Endpoints())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	events := make(chan discovery.Event, 64)
	conn, err := lodestar.Dial(ctx, "user", lodestar.WithEtcdEndpoints(c.Endpoints()...), lodestar.WithEtcdRequestTimeout(time.Nanosecond),
		lodestar.WithResolverOptions(discovery.WithEventHandler(func(e discovery.Event) {
			select {
			case events <- e:
			default:
			}
		})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Connect()
	for {
		select {
		case e := <-events:
			if e.Kind == discovery.EventListed {
				t.Fatalf("the resolver listed etcd within a 1ns request timeout: %v", e)
			}
			if e.Kind == discovery.EventListFailed {
				if !errors.Is(e.Err, context.DeadlineExceeded) {
					t.Fatalf("list failed, but not for want of time: %v", e)
				}
				if _, err := lodestar.Dial(ctx, "user", lodestar.WithEtcdEndpoints(c.Endpoints()...), lodestar.WithEtcdRequestTimeout(-time.Second)); err == nil || !strings.Contains(err.Error(), "request timeout") {
					t.Errorf("Dial with a negative etcd request timeout: %v, want an error naming it", err)
				}
				return
			}
		case <-ctx.Done():
			t.Fatal("no event from the resolver in 30 s")
		}
	}
}
