package registry_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/registry"
)

// TestValueOverwrittenUnderOurLeaseIsPutBack: another writer puts a value
// over a live instance's key under the registrar's own lease (garbage,
// then a valid value naming another address, then a second garbage right
// after the first repair). Each time the registrar reports the key and
// puts its own value back; its own updates raise no report.
func TestValueOverwrittenUnderOurLeaseIsPutBack(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	other := c.Client(t)
	rec := newRecorder()
	r := newRegistrar(t, cli, rec)
	ins := instances(2)
	keys := registerAll(t, r, ins)
	key := keys[0]
	ours := mustGet(t, other, key)

	from := 0
	overwrite := func(bad string) {
		t.Helper()
		wch := other.Watch(ctxT(t, 30*time.Second), key, clientv3.WithRev(ours.ModRevision+1))
		put, err := other.Put(ctxT(t, 5*time.Second), key, bad, clientv3.WithLease(r.Lease()))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var ev registry.Event
		ev, from = rec.next(t, from, registry.EventKeyLost, 10*time.Second)
		if ev.Key != key || !strings.Contains(ev.Err.Error(), "under our lease") {
			t.Fatalf("key-lost event %v; want one naming %s, overwritten under our lease", ev, key)
		}
		for resp := range wch {
			for _, we := range resp.Events {
				if we.Type != mvccpb.PUT || we.Kv.ModRevision <= put.Header.Revision {
					continue
				}
				if !bytes.Equal(we.Kv.Value, ours.Value) || we.Kv.Lease != ours.Lease {
					t.Fatalf("after the overwrite, %s = %s under lease %x; want ours back", key, we.Kv.Value, we.Kv.Lease)
				}
				t.Logf("overwritten with %.20q: our value back %s after the foreign put", bad, time.Since(start).Round(time.Millisecond))
				ours = we.Kv
				return
			}
		}
		t.Fatalf("%s not put back", key)
	}
	overwrite("not json")
	overwrite(`{"Addr":"127.0.0.1:1","Metadata":{"weight":1}}`)
	overwrite("\x1b[2J")

	// Our own update of the key is no overwrite; then one more foreign
	// put, whose report comes after any report of the update.
	if err := r.Drain(ctxT(t, 10*time.Second), "user", ins[0].Addr); err != nil {
		t.Fatal(err)
	}
	ours = mustGet(t, other, key)
	overwrite("{}")
	if n := rec.count(registry.EventKeyLost); n != 4 {
		t.Errorf("%d key-lost events for 4 foreign puts: %v", n, rec.snapshot())
	}
	if _, md, err := registry.Decode(ours.Value); err != nil || md.Status != registry.StatusDraining {
		t.Errorf("value put back after the drain: %s, %v; want the drained one", ours.Value, err)
	}
	if kv := mustGet(t, other, keys[1]); kv == nil || kv.Version != 1 {
		t.Errorf("the other instance was rewritten: %v", kv)
	}
}

// TestSlowEtcdRegistrationCompletes: with a second added to each way of
// the link to etcd (a 2 s round trip) and a request timeout of 500 ms,
// the first attempts time out; the timeouts grow and 10 concurrent
// registrations land. A Register whose context ends first gets a
// PendingError saying which step failed and why.
func TestSlowEtcdRegistrationCompletes(t *testing.T) {
	c := etcdtest.New(t)
	p := etcdtest.NewProxy(t, c.Endpoints()[0])
	p.SetDelay(time.Second)
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: []string{p.Endpoint()}, DialTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	rec := newRecorder()
	r := newRegistrar(t, cli, rec, registry.WithTTL(10*time.Second), registry.WithRequestTimeout(500*time.Millisecond))

	ins := instances(10)
	start := time.Now()
	_, err = r.Register(ctxT(t, 1500*time.Millisecond), ins[0])
	if err == nil {
		t.Fatal("registered within 1.5s over a 2s round trip")
	}
	if !strings.Contains(err.Error(), "grant a 10s lease: no answer from etcd within 500ms") {
		t.Errorf("register before the first grant answered: %v; want the step that failed and why", err)
	}
	errs := make(chan error, len(ins))
	for _, in := range ins[1:] {
		go func() {
			_, err := r.Register(ctxT(t, 120*time.Second), in)
			errs <- err
		}()
	}
	for range ins[1:] {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	ev, _ := rec.next(t, 0, registry.EventRegistered, 120*time.Second)
	t.Logf("10 registrations over a 2s round trip, 500ms first timeout: all in etcd after %s", ev.Time.Sub(start).Round(time.Millisecond))
	checkAll(t, c.Client(t), keysOf(ins), ins, ev.Lease)
}

func keysOf(ins []registry.Instance) []string {
	keys := make([]string, len(ins))
	for i, in := range ins {
		keys[i] = registry.Key(registry.DefaultPrefix, in.Service, in.Addr)
	}
	return keys
}

// TestOverwriteRepairedAfterEtcdWiped: etcd comes back empty with its
// revisions started again, below those of the registrar's last writes.
// Once the instances are back, a value written over one under the
// registrar's new lease is still noticed and put back: the revision of
// a write made before the wipe must not make a later foreign write look
// like an old one of ours.
func TestOverwriteRepairedAfterEtcdWiped(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	rec := newRecorder()
	r := newRegistrar(t, cli, rec)
	ins := instances(1)
	key := registerAll(t, r, ins)[0]
	// Updates push the registrar's last write well past the revisions
	// the empty etcd will start from.
	for i := range 50 {
		if err := r.SetWeight(ctxT(t, 10*time.Second), "user", ins[0].Addr, i+1); err != nil {
			t.Fatal(err)
		}
	}
	before := mustGet(t, c.Client(t), key).ModRevision
	_, from := rec.next(t, 0, registry.EventRegistered, 10*time.Second)

	c.Member(0).RestartEmpty(t)
	other := c.Client(t)
	_, from = rec.next(t, from, registry.EventReregistered, 30*time.Second)
	ours := mustGet(t, other, key)
	if ours == nil || ours.ModRevision >= before {
		t.Fatalf("after the wipe %s = %v; want it back at a revision below %d", key, ours, before)
	}

	wch := other.Watch(ctxT(t, 30*time.Second), key, clientv3.WithRev(ours.ModRevision+1))
	put, err := other.Put(ctxT(t, 5*time.Second), key, "not json", clientv3.WithLease(r.Lease()))
	if err != nil {
		t.Fatal(err)
	}
	if put.Header.Revision >= before {
		t.Fatalf("the foreign put is at revision %d, not below the last write before the wipe (%d): the case is not made", put.Header.Revision, before)
	}
	ev, _ := rec.next(t, from, registry.EventKeyLost, 10*time.Second)
	if ev.Key != key {
		t.Fatalf("key-lost event %v; want one naming %s", ev, key)
	}
	for resp := range wch {
		for _, we := range resp.Events {
			if we.Type == mvccpb.PUT && we.Kv.ModRevision > put.Header.Revision {
				if !bytes.Equal(we.Kv.Value, ours.Value) {
					t.Fatalf("after the overwrite, %s = %q; want ours back", key, we.Kv.Value)
				}
				return
			}
		}
	}
	t.Fatalf("%s not put back", key)
}
