package discovery

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
	"github.com/lodestar-rpc/lodestar/registry"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

// fakeCC records what a resolver pushes. It stands in for grpc's
// ClientConn in tests of the resolver's own logic; end-to-end tests use
// real connections.
type fakeCC struct {
	mu     sync.Mutex
	states []resolver.State
	errs   []error
	signal chan struct{}
}

func newFakeCC() *fakeCC { return &fakeCC{signal: make(chan struct{}, 1)} }

func (f *fakeCC) UpdateState(s resolver.State) error {
	f.mu.Lock()
	f.states = append(f.states, s)
	f.mu.Unlock()
	f.notify()
	return nil
}

func (f *fakeCC) ReportError(err error) {
	f.mu.Lock()
	f.errs = append(f.errs, err)
	f.mu.Unlock()
	f.notify()
}

func (f *fakeCC) notify() {
	select {
	case f.signal <- struct{}{}:
	default:
	}
}

func (f *fakeCC) NewAddress([]resolver.Address) {}

func (f *fakeCC) ParseServiceConfig(string) *serviceconfig.ParseResult { return nil }

func (f *fakeCC) updates() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.states)
}

func (f *fakeCC) last() (resolver.State, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.states) == 0 {
		return resolver.State{}, false
	}
	return f.states[len(f.states)-1], true
}

// waitAddrs waits until the last pushed state has exactly addrs.
func (f *fakeCC) waitAddrs(t testing.TB, timeout time.Duration, addrs ...string) resolver.State {
	t.Helper()
	slices.Sort(addrs)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s, ok := f.last()
		if ok && slices.Equal(addrsOf(s), addrs) {
			return s
		}
		select {
		case <-f.signal:
		case <-deadline.C:
			f.mu.Lock()
			errs := fmt.Sprint(f.errs)
			f.mu.Unlock()
			t.Fatalf("state %v after %s, want %v (errors %s)", addrsOf(s), timeout, addrs, errs)
		}
	}
}

func addrsOf(s resolver.State) []string {
	var out []string
	for _, ep := range s.Endpoints {
		for _, a := range ep.Addresses {
			out = append(out, a.Addr)
		}
	}
	return out
}

func build(t testing.TB, b *Builder, service string, cc resolver.ClientConn) resolver.Resolver {
	t.Helper()
	r, err := b.Build(resolver.Target{URL: url.URL{Scheme: Scheme, Path: "/" + service}}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
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

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// putInstance writes an instance the way a registrar does.
func putInstance(t testing.TB, cli *clientv3.Client, service, addr string, md registry.Metadata, opts ...clientv3.OpOption) string {
	t.Helper()
	if err := tryPut(cli, service, addr, md, opts...); err != nil {
		t.Fatal(err)
	}
	return registry.Key(registry.DefaultPrefix, service, addr)
}

func tryPut(cli *clientv3.Client, service, addr string, md registry.Metadata, opts ...clientv3.OpOption) error {
	if md.Weight == 0 {
		md.Weight = registry.DefaultWeight
	}
	if md.Status == "" {
		md.Status = registry.StatusServing
	}
	v, err := registry.Encode(addr, md)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = cli.Put(ctx, registry.Key(registry.DefaultPrefix, service, addr), string(v), opts...)
	return err
}

// retry calls f until it succeeds, for at most 20 s, pausing 100 ms between
// tries (etcd refuses writes while it elects a leader).
func retry(t testing.TB, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		<-time.After(100 * time.Millisecond)
	}
}

func addr(i int) string { return fmt.Sprintf("127.0.0.1:%d", 30000+i) }

func hasErr(errs []error, sub string) bool {
	for _, e := range errs {
		if strings.Contains(e.Error(), sub) {
			return true
		}
	}
	return false
}

// onHeld returns a channel that receives a value (it holds one) each time
// the watch holds changes back for the update interval.
func onHeld(t testing.TB) <-chan struct{} {
	c := make(chan struct{}, 1)
	hookHeld = func() {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	t.Cleanup(func() { hookHeld = nil })
	return c
}
