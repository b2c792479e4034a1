package discovery_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lodestar-rpc/lodestar/discovery"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
)

// refuseFirst is grpc's round_robin behind a gate that refuses the first
// lists it is given with balancer.ErrBadResolverState, as a balancer does
// with a list it cannot use.
const refuseFirst = "discovery_test_refuse_first"

const refusals = 2

func init() { balancer.Register(refuseBuilder{}) }

type refuseBuilder struct{}

func (refuseBuilder) Name() string { return refuseFirst }

func (refuseBuilder) Build(cc balancer.ClientConn, o balancer.BuildOptions) balancer.Balancer {
	return &refuser{Balancer: balancer.Get("round_robin").Build(cc, o), left: refusals}
}

type refuser struct {
	balancer.Balancer
	left int // UpdateClientConnState and the rest are called from one goroutine
}

func (b *refuser) UpdateClientConnState(s balancer.ClientConnState) error {
	if b.left > 0 {
		b.left--
		return balancer.ErrBadResolverState
	}
	return b.Balancer.UpdateClientConnState(s)
}

// TestRefusedListIsOfferedAgain: grpc's UpdateState returns an error when
// the balancer refuses a list, and asks the resolver to try again with a
// backoff. The resolver offers the list again until it is taken, with no
// change in etcd to prompt it, and reports each refusal.
func TestRefusedListIsOfferedAgain(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	srv := testserver.Start(t)
	register(t, newRegistrar(t, cli), srv)

	log := &eventLog{signal: make(chan struct{}, 1)}
	b, err := discovery.NewBuilder(cli, discovery.WithBackoff(20*time.Millisecond, 200*time.Millisecond), discovery.WithEventHandler(log.add))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(discovery.Target("user"), grpc.WithResolvers(b),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, refuseFirst)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	callUntil(t, conn, 10*time.Second, srv)

	log.mu.Lock()
	defer log.mu.Unlock()
	var refused []discovery.Event
	for _, ev := range log.events {
		switch ev.Kind {
		case discovery.EventRefused:
			refused = append(refused, ev)
		case discovery.EventUpdated:
			t.Errorf("an update (%v) while nothing changed in etcd", ev)
		}
	}
	if len(refused) != refusals {
		t.Fatalf("%d refusals reported, want %d: %v", len(refused), refusals, log.events)
	}
	for _, ev := range refused {
		if ev.Instances != 1 || ev.Err == nil || !strings.Contains(ev.Err.Error(), "grpc refused the list of 1 instances") {
			t.Errorf("refusal reported as %v", ev)
		}
	}
}
