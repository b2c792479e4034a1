package discovery_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lodestar-rpc/lodestar/discovery"
	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
	"github.com/lodestar-rpc/lodestar/registry"
)

func newClient(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// dial connects to service with grpc's round_robin.
func dial(t testing.TB, cli *clientv3.Client, service string, opts ...discovery.Option) (*grpc.ClientConn, *eventLog) {
	t.Helper()
	return dialPolicy(t, cli, service, "round_robin", opts...)
}

// dialPolicy connects to service with the balancer named policy, through a
// Builder of its own made with opts; the log gets the resolver's events.
func dialPolicy(t testing.TB, cli *clientv3.Client, service, policy string, opts ...discovery.Option) (*grpc.ClientConn, *eventLog) {
	t.Helper()
	log := &eventLog{signal: make(chan struct{}, 1)}
	b, err := discovery.NewBuilder(cli, append(opts, discovery.WithEventHandler(log.add))...)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(discovery.Target(service), grpc.WithResolvers(b),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, policy)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, log
}

type eventLog struct {
	mu     sync.Mutex
	events []discovery.Event
	signal chan struct{}
}

func (l *eventLog) add(ev discovery.Event) {
	l.mu.Lock()
	l.events = append(l.events, ev)
	l.mu.Unlock()
	select {
	case l.signal <- struct{}{}:
	default:
	}
}

func newRegistrar(t testing.TB, cli *clientv3.Client) *registry.Registrar {
	t.Helper()
	r, err := registry.New(cli, registry.WithTTL(2*time.Second), registry.WithRequestTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func register(t testing.TB, r *registry.Registrar, s *testserver.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.Register(ctx, registry.Instance{Service: "user", Addr: s.Addr}); err != nil {
		t.Fatal(err)
	}
}

// callUntil makes calls until every server in want has served one more
// call than it had, or fails the test after timeout.
func callUntil(t testing.TB, conn *grpc.ClientConn, timeout time.Duration, want ...*testserver.Server) {
	t.Helper()
	base := make([]int64, len(want))
	for i, s := range want {
		base[i] = s.Calls()
	}
	deadline := time.Now().Add(timeout)
	for {
		all := true
		for i, s := range want {
			if s.Calls() <= base[i] {
				all = false
			}
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every server got a call within %s", timeout)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = testserver.Call(ctx, conn)
		cancel()
	}
}

// load makes calls back to back until stopped, counting failures.
type load struct {
	calls, failed atomic.Int64
	lastErr       atomic.Value
	cancel        context.CancelFunc
	done          chan struct{}
}

func startLoad(conn *grpc.ClientConn) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for ctx.Err() == nil {
			cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
			err := testserver.Call(cctx, conn)
			ccancel()
			if ctx.Err() != nil {
				return
			}
			l.calls.Add(1)
			if err != nil {
				l.failed.Add(1)
				l.lastErr.Store(err.Error())
			}
			t := time.NewTimer(2 * time.Millisecond)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}()
	return l
}

func (l *load) stop() (calls, failed int64) {
	l.cancel()
	<-l.done
	return l.calls.Load(), l.failed.Load()
}

// TestDialFollowsRegistrations: an instance registered after the dial gets
// calls; a deregistered one gets none after the resolver has dropped it.
func TestDialFollowsRegistrations(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	srv := testserver.StartN(t, 3)
	reg := newRegistrar(t, cli)
	register(t, reg, srv[0])
	register(t, reg, srv[1])
	conn, _ := dial(t, cli, "user")
	callUntil(t, conn, 30*time.Second, srv[0], srv[1])

	register(t, reg, srv[2])
	callUntil(t, conn, 30*time.Second, srv[2])

	if err := reg.Deregister(context.Background(), "user", srv[0].Addr); err != nil {
		t.Fatal(err)
	}
	// Wait until calls stop reaching srv[0]: 50 calls in a row elsewhere.
	deadline := time.Now().Add(30 * time.Second)
	for streak := 0; streak < 50; {
		if time.Now().After(deadline) {
			t.Fatal("a deregistered instance kept receiving calls")
		}
		before := srv[0].Calls()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := testserver.Call(ctx, conn); err != nil {
			t.Fatalf("call: %v", err)
		}
		cancel()
		if srv[0].Calls() == before {
			streak++
		} else {
			streak = 0
		}
	}
	before := srv[0].Calls()
	for range 200 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := testserver.Call(ctx, conn); err != nil {
			t.Fatalf("call: %v", err)
		}
		cancel()
	}
	if srv[0].Calls() != before {
		t.Errorf("deregistered instance served %d more calls", srv[0].Calls()-before)
	}
}

// TestEtcdOutageZeroFailedCalls stops etcd for 30 s under steady calls:
// none fails, the list stays, and what changed while etcd was away
// (registered, drained) is right once it is back.
func TestEtcdOutageZeroFailedCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s outage")
	}
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	srv := testserver.StartN(t, 4)
	reg := newRegistrar(t, cli)
	for _, s := range srv[:3] {
		register(t, reg, s)
	}
	conn, _ := dial(t, cli, "user")
	callUntil(t, conn, 30*time.Second, srv[0], srv[1], srv[2])
	l := startLoad(conn)

	m := c.Member(0)
	m.Stop(t)
	atStop := make([]int64, 3)
	for i, s := range srv[:3] {
		atStop[i] = s.Calls()
	}
	// While etcd is away, a new instance registers and one drains: both
	// wait in the registrar.
	pending := make(chan error, 2)
	go func() {
		_, err := reg.Register(context.Background(), registry.Instance{Service: "user", Addr: srv[3].Addr})
		pending <- err
	}()
	go func() { pending <- reg.Drain(context.Background(), "user", srv[0].Addr) }()
	<-time.After(30 * time.Second) // the outage under test
	mid := l.calls.Load()
	// The list stayed whole: every instance kept taking calls.
	for i, s := range srv[:3] {
		if s.Calls() == atStop[i] {
			t.Errorf("instance %d got no call while etcd was away", i)
		}
	}
	m.Restart(t)
	for range 2 {
		if err := <-pending; err != nil {
			t.Fatal(err)
		}
	}
	callUntil(t, conn, 15*time.Second, srv[3])
	// Drained: 100 calls in a row miss srv[0].
	deadline := time.Now().Add(30 * time.Second)
	for streak := 0; streak < 100; {
		if time.Now().After(deadline) {
			t.Fatal("drained instance kept receiving new calls")
		}
		before := srv[0].Calls()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = testserver.Call(ctx, conn)
		cancel()
		if srv[0].Calls() == before {
			streak++
		} else {
			streak = 0
		}
	}
	calls, failed := l.stop()
	t.Logf("30 s etcd outage: %d calls (%d during the outage), %d failed", calls, mid, failed)
	if failed != 0 {
		t.Errorf("%d of %d calls failed; last error: %v", failed, calls, l.lastErr.Load())
	}
}

// TestEtcdWipedZeroFailedCalls: etcd restarts empty; the registrars put the
// instances back and the client never loses them meanwhile.
func TestEtcdWipedZeroFailedCalls(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	srv := testserver.StartN(t, 2)
	reg := newRegistrar(t, cli)
	for _, s := range srv {
		register(t, reg, s)
	}
	conn, log := dial(t, cli, "user")
	callUntil(t, conn, 30*time.Second, srv...)
	l := startLoad(conn)
	c.Member(0).RestartWiped(t)
	// Until the registrar has put both back, and the resolver seen it.
	deadline := time.After(20 * time.Second)
	for {
		resp, err := cli.Get(context.Background(), "/services/user/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count == 2 {
			break
		}
		select {
		case <-log.signal:
		case <-deadline:
			t.Fatal("instances not back after the wipe")
		case <-time.After(100 * time.Millisecond):
		}
	}
	callUntil(t, conn, 30*time.Second, srv...)
	calls, failed := l.stop()
	t.Logf("etcd wiped: %d calls, %d failed", calls, failed)
	if failed != 0 {
		t.Errorf("%d of %d calls failed; last error: %v", failed, calls, l.lastErr.Load())
	}
}

// TestIdleConnectionReleasesWatch: grpc's idle mode closes the resolver and
// builds a new one; each close releases the resolver's etcd watch (counted
// by etcd itself, while the etcd client stays open), and calls work after
// each wake-up.
func TestIdleConnectionReleasesWatch(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	srv := testserver.Start(t)
	// Written directly: a registrar would hold a watch of its own.
	v, err := registry.Encode(srv.Addr, registry.Metadata{Weight: 1, Status: registry.StatusServing})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, registry.Key(registry.DefaultPrefix, "user", srv.Addr), string(v)); err != nil {
		t.Fatal(err)
	}
	b, err := discovery.NewBuilder(cli)
	if err != nil {
		t.Fatal(err)
	}
	base := etcdWatchers(t)
	conn, err := grpc.NewClient(discovery.Target("user"), grpc.WithResolvers(b),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithIdleTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for range 3 {
		callUntil(t, conn, 30*time.Second, srv)
		waitWatchers(t, base+1) // the resolver's watch
		// Wait for the channel to go idle (its resolver closed).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for s := conn.GetState(); s.String() != "IDLE"; s = conn.GetState() {
			if !conn.WaitForStateChange(ctx, s) {
				t.Fatal("connection never went idle")
			}
		}
		cancel()
		waitWatchers(t, base)
	}
}

// etcdWatchers is the number of watchers the etcd servers of this process
// hold, as etcd counts them.
func etcdWatchers(t testing.TB) int {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "etcd_debugging_mvcc_watcher_total" && len(mf.GetMetric()) == 1 {
			return int(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	t.Fatal("etcd's watcher gauge is not registered")
	return 0
}

// waitWatchers waits until etcd holds want watchers. etcd drops a watcher
// when the client's cancel reaches it, an event this process cannot wait
// on, so the gauge is read every 10 ms, for at most 10 s.
func waitWatchers(t testing.TB, want int) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		got := etcdWatchers(t)
		if got == want {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("etcd holds %d watchers, want %d", got, want)
		}
	}
}
