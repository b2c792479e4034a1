package registry_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
	"github.com/lodestar-rpc/lodestar/registry"
)

func TestMain(m *testing.M) {
	if ep := os.Getenv(childEnv); ep != "" {
		runChild(ep)
	}
	leakcheck.VerifyTestMain(m)
}

// recorder collects a registrar's events for a test to wait on.
type recorder struct {
	mu     sync.Mutex
	events []registry.Event
	signal chan struct{}
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1)} }

func (r *recorder) handle(ev registry.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// next waits for the first event of kind recorded at or after index from,
// and returns it with the index after it.
func (r *recorder) next(t testing.TB, from int, kind registry.EventKind, timeout time.Duration) (registry.Event, int) {
	t.Helper()
	return r.nextOf(t, from, timeout, kind)
}

// nextOf waits for the first event of any of kinds recorded at or after
// index from, and returns it with the index after it.
func (r *recorder) nextOf(t testing.TB, from int, timeout time.Duration, kinds ...registry.EventKind) (registry.Event, int) {
	t.Helper()
	return r.until(t, from, timeout, fmt.Sprint("kind ", kinds), func(ev registry.Event) bool { return slices.Contains(kinds, ev.Kind) })
}

// until waits, up to timeout in all, for the first event at or after
// index from that ok accepts, and returns it with the index after it.
func (r *recorder) until(t testing.TB, from int, timeout time.Duration, what string, ok func(registry.Event) bool) (registry.Event, int) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for i := from; i < len(r.events); i++ {
			if ok(r.events[i]) {
				ev := r.events[i]
				r.mu.Unlock()
				return ev, i + 1
			}
		}
		seen := fmt.Sprint(r.events[from:])
		r.mu.Unlock()
		select {
		case <-r.signal:
		case <-deadline.C:
			t.Fatalf("no event with %s within %s; events since #%d: %.2000s", what, timeout, from, seen)
		}
	}
}

// snapshot returns the events recorded so far.
func (r *recorder) snapshot() []registry.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]registry.Event(nil), r.events...)
}

func (r *recorder) count(kind registry.EventKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.events {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

func newClient(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func newRegistrar(t testing.TB, cli *clientv3.Client, rec *recorder, opts ...registry.Option) *registry.Registrar {
	t.Helper()
	opts = append([]registry.Option{registry.WithTTL(2 * time.Second), registry.WithRequestTimeout(time.Second)}, opts...)
	if rec != nil {
		opts = append(opts, registry.WithEventHandler(rec.handle))
	}
	r, err := registry.New(cli, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustGet(t testing.TB, cli *clientv3.Client, key string) *mvccpb.KeyValue {
	t.Helper()
	resp, err := cli.Get(ctxT(t, 5*time.Second), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	return resp.Kvs[0]
}

func instances(n int) []registry.Instance {
	out := make([]registry.Instance, n)
	for i := range out {
		out[i] = registry.Instance{
			Service: "user",
			Addr:    fmt.Sprintf("127.0.0.1:%d", 20001+i),
			Metadata: registry.Metadata{Version: "v1", Region: "eu", Zone: fmt.Sprintf("eu-%d", i),
				Labels: map[string]string{"i": fmt.Sprint(i)}},
		}
	}
	return out
}

func registerAll(t testing.TB, r *registry.Registrar, ins []registry.Instance) []string {
	t.Helper()
	keys := make([]string, len(ins))
	for i, in := range ins {
		k, err := r.Register(ctxT(t, 10*time.Second), in)
		if err != nil {
			t.Fatalf("register %v: %v", in, err)
		}
		keys[i] = k
	}
	return keys
}

// checkAll asserts that every key is in etcd under lease with the value the
// instance should have.
func checkAll(t testing.TB, cli *clientv3.Client, keys []string, ins []registry.Instance, lease clientv3.LeaseID) {
	t.Helper()
	for i, k := range keys {
		kv := mustGet(t, cli, k)
		if kv == nil {
			t.Fatalf("%s missing from etcd", k)
		}
		if clientv3.LeaseID(kv.Lease) != lease {
			t.Errorf("%s under lease %x, want %x", k, kv.Lease, int64(lease))
		}
		addr, md, err := registry.Decode(kv.Value)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		if addr != ins[i].Addr || md.Zone != ins[i].Metadata.Zone || md.Weight != registry.DefaultWeight || md.Status != registry.StatusServing {
			t.Errorf("%s = %s", k, kv.Value)
		}
	}
}

func TestRegisterVisibleThenCloseRemoves(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	check := c.Client(t)
	rec := newRecorder()
	r := newRegistrar(t, cli, rec)

	ins := instances(3)
	keys := registerAll(t, r, ins)
	if keys[0] != "/services/user/127.0.0.1:20001" {
		t.Errorf("key = %s", keys[0])
	}
	lease := r.Lease()
	if lease == 0 || r.State() != registry.StateRegistered {
		t.Fatalf("lease %x, state %s", int64(lease), r.State())
	}
	checkAll(t, check, keys, ins, lease)
	ttl, err := check.TimeToLive(ctxT(t, 5*time.Second), lease)
	if err != nil || ttl.GrantedTTL != 2 {
		t.Fatalf("lease TTL: %+v, %v", ttl, err)
	}
	if got := rec.count(registry.EventRegistered); got != 1 {
		t.Errorf("%d registered events, want 1 (one lease shared by all instances)", got)
	}

	if _, err := r.Register(ctxT(t, time.Second), ins[0]); !errors.Is(err, registry.ErrDuplicateID) {
		t.Errorf("duplicate register: %v", err)
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if kv := mustGet(t, check, k); kv != nil {
			t.Errorf("%s still in etcd after Close", k)
		}
	}
	ttl, err = check.TimeToLive(ctxT(t, 5*time.Second), lease)
	if err != nil || ttl.TTL != -1 {
		t.Errorf("lease after Close: %+v, %v; want revoked", ttl, err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := r.Register(ctxT(t, time.Second), ins[0]); !errors.Is(err, registry.ErrClosed) {
		t.Errorf("register after close: %v", err)
	}
	rec.next(t, 0, registry.EventClosed, time.Second)
}

func TestDeregister(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	r := newRegistrar(t, cli, nil)
	keys := registerAll(t, r, instances(2))
	if err := r.Deregister(ctxT(t, 5*time.Second), "user", "127.0.0.1:20001"); err != nil {
		t.Fatal(err)
	}
	if mustGet(t, cli, keys[0]) != nil || mustGet(t, cli, keys[1]) == nil {
		t.Fatal("deregister removed the wrong key")
	}
	if err := r.Deregister(ctxT(t, time.Second), "user", "127.0.0.1:20001"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("second deregister: %v", err)
	}
	if got := len(r.Instances()); got != 1 {
		t.Errorf("%d instances held, want 1", got)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	c := etcdtest.New(t)
	cli := c.Client(t)
	for _, tc := range []struct {
		opts []registry.Option
		want string
	}{
		{[]registry.Option{registry.WithTTL(500 * time.Millisecond)}, "TTL 500ms is below 1s"},
		{[]registry.Option{registry.WithPrefix("/")}, "prefix"},
		{[]registry.Option{registry.WithBackoff(time.Second, time.Millisecond)}, "backoff"},
	} {
		r, err := registry.New(cli, tc.opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			if r != nil {
				r.Close()
			}
			t.Errorf("New(%v) = %v, want error containing %q", tc.opts, err, tc.want)
		}
	}
	if _, err := registry.New(nil); err == nil {
		t.Error("New(nil client) accepted")
	}
}

func TestAbandonedRegistrationExpiresAfterTTL(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	check := c.Client(t)
	r := newRegistrar(t, cli, nil)
	keys := registerAll(t, r, instances(1))
	kv := mustGet(t, check, keys[0])
	if kv == nil {
		t.Fatal("not registered")
	}
	wch := check.Watch(ctxT(t, 10*time.Second), keys[0], clientv3.WithRev(kv.ModRevision+1))

	r.Orphan() // the process stops keeping the lease alive, as if it had died
	abandoned := time.Now()
	if mustGet(t, check, keys[0]) == nil {
		t.Fatal("key deleted at once; it should live until the lease expires")
	}
	waitExpired(t, wch, abandoned, "the keepalive stopped")
}

// waitExpired waits on wch for the key's DELETE, which must come when the
// lease expires: not at once, and within the watch's deadline.
func waitExpired(t *testing.T, wch clientv3.WatchChan, since time.Time, what string) {
	t.Helper()
	for resp := range wch {
		for _, ev := range resp.Events {
			if ev.Type == mvccpb.DELETE {
				gone := time.Since(since)
				t.Logf("key gone %s after %s (TTL 2s)", gone.Round(time.Millisecond), what)
				if gone < 500*time.Millisecond {
					t.Errorf("key gone %s after %s: before the lease could expire", gone, what)
				}
				return
			}
		}
	}
	t.Fatalf("key still in etcd when the watch ended, after %s", what)
}

func TestDrainUndrainAndWeightInPlace(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	r := newRegistrar(t, cli, nil)
	keys := registerAll(t, r, instances(1))
	lease := r.Lease()
	kv := mustGet(t, cli, keys[0])
	wch := cli.Watch(ctxT(t, 15*time.Second), keys[0], clientv3.WithRev(kv.ModRevision+1))

	steps := []struct {
		do   func(context.Context) error
		want func(registry.Metadata) bool
		name string
	}{
		{func(ctx context.Context) error { return r.Drain(ctx, "user", "127.0.0.1:20001") },
			func(m registry.Metadata) bool { return m.Status == registry.StatusDraining }, "drain"},
		{func(ctx context.Context) error { return r.Undrain(ctx, "user", "127.0.0.1:20001") },
			func(m registry.Metadata) bool { return m.Status == registry.StatusServing }, "undrain"},
		{func(ctx context.Context) error { return r.SetWeight(ctx, "user", "127.0.0.1:20001", 7) },
			func(m registry.Metadata) bool { return m.Weight == 7 }, "weight 7"},
		{func(ctx context.Context) error { return r.SetWeight(ctx, "user", "127.0.0.1:20001", 0) },
			func(m registry.Metadata) bool { return m.Weight == 0 }, "weight 0"},
	}
	for _, s := range steps {
		if err := s.do(ctxT(t, 5*time.Second)); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		resp := <-wch
		if err := resp.Err(); err != nil {
			t.Fatal(err)
		}
		if len(resp.Events) != 1 || resp.Events[0].Type != mvccpb.PUT {
			t.Fatalf("%s: watcher saw %v, want one PUT", s.name, resp.Events)
		}
		ev := resp.Events[0]
		_, md, err := registry.Decode(ev.Kv.Value)
		if err != nil || !s.want(md) {
			t.Fatalf("%s: watcher saw %s (%v)", s.name, ev.Kv.Value, err)
		}
		if clientv3.LeaseID(ev.Kv.Lease) != lease {
			t.Fatalf("%s: key moved to lease %x", s.name, ev.Kv.Lease)
		}
	}
	err := r.SetWeight(ctxT(t, time.Second), "user", "127.0.0.1:20001", registry.MaxWeight+1)
	if err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("weight out of range: %v", err)
	}
	if err := r.Drain(ctxT(t, time.Second), "user", "nope"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("drain unknown: %v", err)
	}
}

func TestKeyDeletedBySomeoneElseIsPutBack(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	other := c.Client(t)
	rec := newRecorder()
	r := newRegistrar(t, cli, rec)
	ins := instances(1)
	keys := registerAll(t, r, ins)
	kv := mustGet(t, other, keys[0])
	wch := other.Watch(ctxT(t, 10*time.Second), keys[0], clientv3.WithRev(kv.ModRevision+1))

	if _, err := other.Delete(ctxT(t, 5*time.Second), keys[0]); err != nil {
		t.Fatal(err)
	}
	rec.next(t, 0, registry.EventKeyLost, 5*time.Second)
	for resp := range wch {
		for _, ev := range resp.Events {
			if ev.Type == mvccpb.PUT {
				checkAll(t, other, keys, ins, r.Lease())
				return
			}
		}
	}
	t.Fatal("key not put back")
}

func TestRevokedLeaseIsReplaced(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	other := c.Client(t)
	rec := newRecorder()
	r := newRegistrar(t, cli, rec)
	ins := instances(3)
	keys := registerAll(t, r, ins)
	old := r.Lease()
	if _, err := other.Revoke(ctxT(t, 5*time.Second), old); err != nil {
		t.Fatal(err)
	}
	lost, i := rec.next(t, 0, registry.EventLeaseLost, 5*time.Second)
	if lost.Lease != old || lost.Err == nil {
		t.Errorf("lease-lost event %v", lost)
	}
	back, _ := rec.next(t, i, registry.EventReregistered, 5*time.Second)
	if back.Lease == old || back.Instances != 3 {
		t.Errorf("re-registered event %v", back)
	}
	checkAll(t, other, keys, ins, back.Lease)
}

// TestEtcdOutageLongerThanTTL stops the only etcd member for longer than the
// TTL and starts it again, with its data and without, and measures the time
// from etcd being ready to every instance being back under a live lease. The
// last case uses a client with clientv3's default settings (grpc's reconnect
// backoff grows to minutes) and a longer outage.
func TestEtcdOutageLongerThanTTL(t *testing.T) {
	for _, tc := range []struct {
		name  string
		wipe  bool
		plain bool          // a clientv3 client with default settings
		extra time.Duration // outage beyond the moment the lease is lost
	}{
		{name: "data-kept"},
		{name: "data-wiped", wipe: true},
		{name: "plain-client-12s-outage", plain: true, extra: 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := etcdtest.New(t)
			var cli *clientv3.Client
			if tc.plain {
				var err error
				cli, err = clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { cli.Close() })
			} else {
				cli = newClient(t, c.Endpoints())
			}
			rec := newRecorder()
			r := newRegistrar(t, cli, rec)
			ins := instances(5)
			keys := registerAll(t, r, ins)

			m := c.Member(0)
			m.Stop(t)
			// The registrar notices the lease is gone one TTL after its
			// last keepalive answer: the outage is now longer than the TTL.
			_, i := rec.next(t, 0, registry.EventLeaseLost, 10*time.Second)
			if r.State() == registry.StateRegistered {
				t.Error("state registered while etcd is down")
			}
			if tc.extra > 0 {
				// The outage itself is under test: its length lets grpc's
				// reconnect backoff grow.
				<-time.After(tc.extra)
			}
			if tc.wipe {
				m.RestartWiped(t)
			} else {
				m.Restart(t)
			}
			ready := m.ReadyAt()
			back, _ := rec.next(t, i, registry.EventReregistered, 15*time.Second)
			took := back.Time.Sub(ready)
			t.Logf("%s: etcd ready → all %d instances back under a new lease: %s",
				tc.name, len(ins), took.Round(time.Millisecond))
			check := c.Client(t)
			checkAll(t, check, keys, ins, back.Lease)
			leases, err := check.Leases(ctxT(t, 5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if len(leases.Leases) != 1 || leases.Leases[0].ID != back.Lease {
				t.Errorf("etcd holds leases %v, want only the registrar's new lease %x", leases.Leases, int64(back.Lease))
			}
		})
	}
}

// TestShortOutageKeepsLease: etcd restarted within the TTL; the lease
// survives and nothing is re-registered.
func TestShortOutageKeepsLease(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	rec := newRecorder()
	r := newRegistrar(t, cli, rec, registry.WithTTL(5*time.Second))
	keys := registerAll(t, r, instances(2))
	lease := r.Lease()
	m := c.Member(0)
	m.Stop(t)
	m.Restart(t)
	// etcd restores the lease with a fresh 5s TTL. Observe for longer than
	// that: the lease outlives the window only if the registrar's
	// keepalives reach the restarted etcd.
	<-time.After(7 * time.Second)
	check := c.Client(t)
	resp, err := check.TimeToLive(ctxT(t, 2*time.Second), lease)
	if err != nil || resp.TTL <= 0 {
		t.Fatalf("lease after a short outage: %+v, %v; want it alive", resp, err)
	}
	if n := rec.count(registry.EventLeaseLost); n != 0 || r.Lease() != lease {
		t.Errorf("%d lease-lost events, lease %x → %x; want the lease kept", n, int64(lease), int64(r.Lease()))
	}
	for _, k := range keys {
		if kv := mustGet(t, check, k); kv == nil || clientv3.LeaseID(kv.Lease) != lease {
			t.Errorf("%s = %v", k, kv)
		}
	}
}

// TestCloseIsBoundedWhenEtcdIsDown: Close returns within its timeout and says
// the keys will expire.
func TestCloseIsBoundedWhenEtcdIsDown(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	r := newRegistrar(t, cli, nil, registry.WithCloseTimeout(500*time.Millisecond))
	registerAll(t, r, instances(1))
	c.Member(0).Stop(t)
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- r.Close() }()
	// Without its timeout Close would wait for etcd, which never comes
	// back in this test; the deadline only bounds that hang.
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	select {
	case err := <-done:
		t.Logf("Close with etcd down and a 500ms close timeout returned after %s", time.Since(start).Round(time.Millisecond))
		if err == nil || !strings.Contains(err.Error(), "expire with the lease") {
			t.Errorf("Close with etcd down: %v", err)
		}
	case <-deadline.C:
		t.Fatal("Close with etcd down did not return within 30s, with a 500ms close timeout")
	}
}

// TestClientClosedUnderRegistrar: closing the etcd client under a live
// registrar is reported, not silent, and later calls say why they fail.
func TestClientClosedUnderRegistrar(t *testing.T) {
	c := etcdtest.New(t)
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: c.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	r := newRegistrar(t, cli, rec)
	registerAll(t, r, instances(1))
	cli.Close()
	for i := 0; ; {
		var ev registry.Event
		ev, i = rec.next(t, i, registry.EventLeaseLost, 10*time.Second)
		if strings.Contains(ev.Err.Error(), "etcd client closed") {
			break
		}
	}
	if r.State() != registry.StateClosed {
		t.Errorf("state %s", r.State())
	}
	_, err = r.Register(context.Background(), registry.Instance{Service: "user", Addr: "127.0.0.1:1"})
	if err == nil || !strings.Contains(err.Error(), "etcd client closed") {
		t.Errorf("register after the client closed: %v", err)
	}
}

// TestCallsAfterCloseFailAtOnce: nothing waits on a closed registrar.
func TestCallsAfterCloseFailAtOnce(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	r := newRegistrar(t, cli, nil)
	registerAll(t, r, instances(1))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background() // no deadline: a call that waited would hang the test
	if err := r.Drain(ctx, "user", "127.0.0.1:20001"); !errors.Is(err, registry.ErrClosed) {
		t.Errorf("Drain after Close: %v", err)
	}
	if err := r.Deregister(ctx, "user", "127.0.0.1:20001"); !errors.Is(err, registry.ErrClosed) {
		t.Errorf("Deregister after Close: %v", err)
	}
	if _, err := r.Register(ctx, instances(2)[1]); !errors.Is(err, registry.ErrClosed) {
		t.Errorf("Register after Close: %v", err)
	}
	if r.State() != registry.StateClosed || len(r.Instances()) != 0 {
		t.Errorf("state %s, %d instances", r.State(), len(r.Instances()))
	}
}

// TestConcurrentUpdatesDoNotUndoEachOther: an update whose function runs
// while another update lands is applied on top of it.
func TestConcurrentUpdatesDoNotUndoEachOther(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	r := newRegistrar(t, cli, nil)
	keys := registerAll(t, r, instances(1))
	inF, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		done <- r.Update(ctxT(t, 10*time.Second), "user", "127.0.0.1:20001", func(m *registry.Metadata) {
			once.Do(func() { close(inF) })
			<-release
			m.Status = registry.StatusDraining
		})
	}()
	<-inF
	if err := r.SetWeight(ctxT(t, 5*time.Second), "user", "127.0.0.1:20001", 7); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, md, err := registry.Decode(mustGet(t, cli, keys[0]).Value)
	if err != nil || md.Weight != 7 || md.Status != registry.StatusDraining {
		t.Errorf("after concurrent drain and weight 7: %+v, %v", md, err)
	}
}

// TestKeyTakenOverIsReportedAndNotDeleted: another registrar writes the same
// key; ours reports it, and its Deregister and Close leave the other's key
// alone.
func TestKeyTakenOverIsReportedAndNotDeleted(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	rec := newRecorder()
	r := newRegistrar(t, cli, rec)
	ins := instances(2)
	keys := registerAll(t, r, ins)

	other := newRegistrar(t, newClient(t, c.Endpoints()), nil)
	registerAll(t, other, ins[:1])
	ev, _ := rec.next(t, 0, registry.EventKeyLost, 5*time.Second)
	if ev.Key != keys[0] || !strings.Contains(ev.Err.Error(), "another registrar") {
		t.Errorf("key-lost event %v", ev)
	}
	if err := r.Deregister(ctxT(t, 5*time.Second), "user", ins[0].Addr); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	kv := mustGet(t, cli, keys[0])
	if kv == nil || clientv3.LeaseID(kv.Lease) != other.Lease() {
		t.Fatalf("the other registrar's key after our Deregister and Close: %v", kv)
	}
	if mustGet(t, cli, keys[1]) != nil {
		t.Errorf("%s, ours alone, still in etcd after Close", keys[1])
	}
}

// TestUpdateRightAfterRevoke: a put that finds its lease gone grants a new
// one and succeeds.
func TestUpdateRightAfterRevoke(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	r := newRegistrar(t, cli, nil)
	ins := instances(1)
	keys := registerAll(t, r, ins)
	old := r.Lease()
	if _, err := cli.Revoke(ctxT(t, 5*time.Second), old); err != nil {
		t.Fatal(err)
	}
	if err := r.Drain(ctxT(t, 10*time.Second), "user", ins[0].Addr); err != nil {
		t.Fatal(err)
	}
	kv := mustGet(t, cli, keys[0])
	if kv == nil || kv.Lease == int64(old) || clientv3.LeaseID(kv.Lease) != r.Lease() {
		t.Fatalf("after drain on a revoked lease: %v (old lease %x, now %x)", kv, int64(old), int64(r.Lease()))
	}
	if _, md, _ := registry.Decode(kv.Value); md.Status != registry.StatusDraining {
		t.Errorf("status %s", md.Status)
	}
}

// TestLeaderStopKeepsRegistration stops the leader of a 3-member cluster
// while the registrar's client is connected to it alone, and checks with a
// watch that the key is never absent.
func TestLeaderStopKeepsRegistration(t *testing.T) {
	c := etcdtest.New(t, etcdtest.Members(3))
	leader, err := c.Leader(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// The client reaches every member through a proxy. While it connects,
	// the followers' proxies hold their traffic, so its only ready
	// connection, and with it the keepalive stream, is to the leader.
	proxies := c.Proxies(t)
	var eps []string
	for i, p := range proxies {
		eps = append(eps, p.Endpoint())
		if c.Member(i) != leader {
			p.Pause()
		}
	}
	cli := newClient(t, eps)
	rec := newRecorder()
	r := newRegistrar(t, cli, rec, registry.WithTTL(3*time.Second))
	ins := instances(2)
	keys := registerAll(t, r, ins)
	lease := r.Lease()
	for _, p := range proxies {
		p.Resume()
	}
	watcher := c.Client(t)
	kv := mustGet(t, watcher, keys[0])

	deletes := make(chan string, 16)
	wctx, wcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // watch until cancelled, resuming from the last revision
		defer wg.Done()
		rev := kv.ModRevision + 1
		for wctx.Err() == nil {
			for resp := range watcher.Watch(clientv3.WithRequireLeader(wctx), "/services/user/", clientv3.WithPrefix(), clientv3.WithRev(rev)) {
				for _, ev := range resp.Events {
					rev = ev.Kv.ModRevision + 1
					if ev.Type == mvccpb.DELETE {
						select {
						case deletes <- string(ev.Kv.Key):
						case <-wctx.Done():
						}
					}
				}
			}
			select { // no leader yet: try again shortly
			case <-wctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	defer func() { wcancel(); wg.Wait() }()

	c.StopLeader(t)
	if _, err := c.Leader(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Observe for two TTLs after the election: a lease that had lost its
	// keepalive would have expired and its keys been deleted by then.
	window := time.NewTimer(6 * time.Second)
	defer window.Stop()
	select {
	case k := <-deletes:
		t.Fatalf("%s was deleted during the leader change", k)
	case <-window.C:
	}
	if n := rec.count(registry.EventLeaseLost); n != 0 {
		t.Errorf("%d lease-lost events during a leader change", n)
	}
	checkAll(t, watcher, keys, ins, lease)
	ttl, err := watcher.TimeToLive(ctxT(t, 5*time.Second), lease)
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("lease after the leader change: %+v, %v", ttl, err)
	}
	t.Logf("stopped leader %s under the registrar's only connection: key never absent (watched every revision), lease kept", leader.Name())
}

// TestPartitionLongerThanTTL cuts the registrar's client off from etcd with
// a proxy for longer than the TTL, then heals the partition.
func TestPartitionLongerThanTTL(t *testing.T) {
	c := etcdtest.New(t)
	proxy := etcdtest.NewProxy(t, c.Member(0).Endpoint())
	cli := newClient(t, []string{proxy.Endpoint()})
	direct := c.Client(t)
	rec := newRecorder()
	r := newRegistrar(t, cli, rec)
	ins := instances(2)
	keys := registerAll(t, r, ins)
	kv := mustGet(t, direct, keys[0])
	wch := direct.Watch(ctxT(t, 20*time.Second), keys[0], clientv3.WithRev(kv.ModRevision+1))

	proxy.Pause()
	// etcd expires the lease: the key really goes.
	expired := false
	for resp := range wch {
		for _, ev := range resp.Events {
			if ev.Type == mvccpb.DELETE {
				expired = true
			}
		}
		if expired {
			break
		}
	}
	if !expired {
		t.Fatal("key never expired during the partition")
	}
	_, i := rec.next(t, 0, registry.EventLeaseLost, 10*time.Second)
	healed := time.Now()
	proxy.Resume()
	back, _ := rec.next(t, i, registry.EventReregistered, 15*time.Second)
	t.Logf("partition healed → instances back: %s", back.Time.Sub(healed).Round(time.Millisecond))
	checkAll(t, direct, keys, ins, back.Lease)
}

// TestRegisterWhileEtcdDown: Register returns a PendingError when etcd cannot
// be reached, keeps the instance, and writes it once etcd is back.
func TestRegisterWhileEtcdDown(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	rec := newRecorder()
	r := newRegistrar(t, cli, rec)
	c.Member(0).Stop(t)
	ins := instances(1)
	_, err := r.Register(ctxT(t, 300*time.Millisecond), ins[0])
	var pe *registry.PendingError
	if !errors.As(err, &pe) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("register with etcd down: %v, want a PendingError", err)
	}
	rec.next(t, 0, registry.EventRetrying, 5*time.Second)
	c.Member(0).Restart(t)
	ev, _ := rec.next(t, 0, registry.EventRegistered, 10*time.Second)
	checkAll(t, c.Client(t), []string{pe.Key}, ins, ev.Lease)
}
