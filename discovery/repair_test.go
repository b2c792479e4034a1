package discovery

import (
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/registry"
)

// TestOverwrittenInstanceServedAgain: a bad value written over a live
// instance's key under its own lease makes every client drop the instance
// (the value is refused); its registrar notices and puts its own value
// back, and the client serves the instance again.
func TestOverwrittenInstanceServedAgain(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	reg, err := registry.New(cli, registry.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	for i := 1; i <= 2; i++ {
		if _, err := reg.Register(ctxT(t, 30*time.Second), registry.Instance{Service: "user", Addr: addr(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Every change is pushed at once, so the drop is seen on its own.
	b, err := NewBuilder(cli, WithUpdateInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	cc := newFakeCC()
	build(t, b, "user", cc)
	cc.waitAddrs(t, 30*time.Second, addr(1), addr(2))
	from := cc.updates()

	other := newClient(t, c.Endpoints())
	start := time.Now()
	if _, err := other.Put(ctxT(t, 10*time.Second), registry.Key(registry.DefaultPrefix, "user", addr(1)), "not json", clientv3.WithLease(reg.Lease())); err != nil {
		t.Fatal(err)
	}
	// The drop, then the instance back.
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for dropped := false; ; {
		cc.mu.Lock()
		states := cc.states[from:]
		cc.mu.Unlock()
		for _, s := range states {
			has := slices.Contains(addrsOf(s), addr(1))
			if !has && !dropped {
				dropped = true
			}
			if has && dropped {
				t.Logf("instance served again %s after the overwrite", time.Since(start).Round(time.Millisecond))
				return
			}
		}
		from += len(states)
		select {
		case <-cc.signal:
		case <-deadline.C:
			t.Fatalf("instance dropped: %v; served again: false; want both within 30s (states %v)", dropped, addrsOfAll(cc))
		}
	}
}

func addrsOfAll(cc *fakeCC) [][]string {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	var out [][]string
	for _, s := range cc.states {
		out = append(out, addrsOf(s))
	}
	return out
}
