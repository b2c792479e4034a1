package discovery_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"

	"github.com/lodestar-rpc/lodestar/discovery"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
	"github.com/lodestar-rpc/lodestar/registry"
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

	conn, log := dialPolicy(t, cli, "user", refuseFirst, discovery.WithBackoff(20*time.Millisecond, 200*time.Millisecond))
	callUntil(t, conn, 30*time.Second, srv)

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

// addressPicker is a balancer on grpc's balancer/base, which reads
// resolver.State.Addresses only, as many hand-written balancers do. Its
// picker goes round the ready instances and records each one's weight as
// AddressInstance reads it.
const addressPicker = "discovery_test_address_picker"

var addressWeights sync.Map // address -> weight, as the picker last saw it

func init() {
	balancer.Register(base.NewBalancerBuilder(addressPicker, addressPickerBuilder{}, base.Config{}))
}

type addressPickerBuilder struct{}

func (addressPickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	if len(info.ReadySCs) == 0 {
		return base.NewErrPicker(balancer.ErrNoSubConnAvailable)
	}
	p := &addressRR{}
	for sc, sci := range info.ReadySCs {
		if in, ok := discovery.AddressInstance(sci.Address); ok {
			addressWeights.Store(sci.Address.Addr, in.Metadata.Weight)
		}
		p.scs = append(p.scs, sc)
	}
	return p
}

type addressRR struct {
	next atomic.Uint32
	scs  []balancer.SubConn
}

func (p *addressRR) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{SubConn: p.scs[int(p.next.Add(1))%len(p.scs)]}, nil
}

// TestAddressesForBaseBalancers: with WithAddresses a balancer that reads
// addresses only gets every instance, with its metadata; without it, it
// finds none, refuses each list, and the resolver reports that.
func TestAddressesForBaseBalancers(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	srv := testserver.StartN(t, 2)
	reg := newRegistrar(t, cli)
	for i, s := range srv {
		if _, err := reg.Register(context.Background(), registry.Instance{Service: "user", Addr: s.Addr, Metadata: registry.Metadata{Weight: 10 + i}}); err != nil {
			t.Fatal(err)
		}
	}
	backoff := discovery.WithBackoff(20*time.Millisecond, 100*time.Millisecond)
	conn, _ := dialPolicy(t, cli, "user", addressPicker, backoff, discovery.WithAddresses())
	callUntil(t, conn, 30*time.Second, srv[0], srv[1])
	for i, s := range srv {
		if w, _ := addressWeights.Load(s.Addr); w != 10+i {
			t.Errorf("%s: the picker read weight %v, want %d", s.Addr, w, 10+i)
		}
	}

	bare, log := dialPolicy(t, cli, "user", addressPicker, backoff)
	bare.Connect() // out of idle: the resolver starts
	deadline := time.After(10 * time.Second)
	for {
		log.mu.Lock()
		n := 0
		for _, ev := range log.events {
			if ev.Kind == discovery.EventRefused {
				n++
			}
		}
		log.mu.Unlock()
		if n >= 2 { // refused, and refused again when offered again
			break
		}
		select {
		case <-log.signal:
		case <-deadline:
			t.Fatalf("%d refusals of a list a base balancer cannot read, want 2", n)
		}
	}
}
