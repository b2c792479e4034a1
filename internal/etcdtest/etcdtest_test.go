package etcdtest

import (
	"context"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
	clientv3 "go.etcd.io/etcd/client/v3"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// put writes k=v, retrying while the cluster settles (a Put is not retried by
// the client when it may have reached a member that went away).
func put(t *testing.T, cli *clientv3.Client, k, v string) {
	t.Helper()
	ctx := ctxTimeout(t, 10*time.Second)
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Put(actx, k, v)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("put %s: %v", k, err)
		case <-time.After(50 * time.Millisecond): // back off before retrying
		}
	}
}

// get returns the value of k ("" if absent) with a linearizable Get.
func get(t *testing.T, cli *clientv3.Client, k string) string {
	t.Helper()
	resp, err := cli.Get(ctxTimeout(t, 10*time.Second), k)
	if err != nil {
		t.Fatalf("get %s: %v", k, err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

func wantGet(t *testing.T, cli *clientv3.Client, k, want string) {
	t.Helper()
	if got := get(t, cli, k); got != want {
		t.Fatalf("get %s = %q, want %q", k, got, want)
	}
}

func TestSingleMember(t *testing.T) {
	c := New(t)
	if c.Size() != 1 || len(c.Endpoints()) != 1 || c.Endpoints()[0] != c.Member(0).Endpoint() {
		t.Fatalf("Size %d, Endpoints %v", c.Size(), c.Endpoints())
	}
	cli := c.Client(t)
	put(t, cli, "k", "v")
	wantGet(t, cli, "k", "v")

	m := c.Member(0)
	if l, err := c.Leader(ctxTimeout(t, 5*time.Second)); err != nil || l != m {
		t.Fatalf("Leader = %v, %v; want %s", l, err, m.Name())
	}
	firstReady := m.ReadyAt()
	m.Stop(t)
	if m.Running() {
		t.Fatal("Running after Stop")
	}
	if _, err := cli.Get(ctxTimeout(t, time.Second), "k"); err == nil {
		t.Fatal("Get on a stopped member succeeded")
	}

	m.Restart(t)
	if !m.Running() || !m.ReadyAt().After(firstReady) {
		t.Fatalf("after Restart: Running %v, ReadyAt %v (before %v)", m.Running(), m.ReadyAt(), firstReady)
	}
	wantGet(t, cli, "k", "v")

	m.RestartWiped(t)
	if err := c.WaitHealthy(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	wantGet(t, cli, "k", "")
	put(t, cli, "k2", "v2")
	wantGet(t, cli, "k2", "v2")
}

func TestThreeMembers(t *testing.T) {
	c := New(t, Members(3))
	if c.Size() != 3 {
		t.Fatalf("Size = %d", c.Size())
	}
	leader, err := c.Leader(ctxTimeout(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cli := c.Client(t)
	put(t, cli, "a", "1")

	old := c.StopLeader(t)
	if old != leader || old.Running() {
		t.Fatalf("StopLeader stopped %s (running %v), leader was %s", old.Name(), old.Running(), leader.Name())
	}
	nl, err := c.Leader(ctxTimeout(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if nl == old {
		t.Fatalf("new leader is the stopped member %s", nl.Name())
	}
	put(t, cli, "b", "2")

	old.Restart(t)
	oldCli := newClient(t, []string{old.Endpoint()})
	wantGet(t, oldCli, "b", "2")

	if err := c.WaitHealthy(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	nl, err = c.Leader(ctxTimeout(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var follower *Member
	for i := range c.Size() {
		if m := c.Member(i); m != nl {
			follower = m
			break
		}
	}
	follower.RestartWiped(t)
	fCli := newClient(t, []string{follower.Endpoint()})
	wantGet(t, fCli, "a", "1")
	wantGet(t, fCli, "b", "2")
	if err := c.WaitHealthy(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	put(t, cli, "c", "3")
	wantGet(t, fCli, "c", "3")

	// A client through one proxy per member can be cut off from the whole
	// cluster.
	ps := c.Proxies(t)
	var eps []string
	for _, p := range ps {
		eps = append(eps, p.Endpoint())
	}
	pCli := newClient(t, eps)
	wantGet(t, pCli, "c", "3")
	for _, p := range ps {
		p.Pause()
	}
	if _, err := pCli.Get(ctxTimeout(t, 500*time.Millisecond), "c"); err == nil {
		t.Fatal("Get through paused proxies succeeded")
	}
	for _, p := range ps {
		p.Resume()
	}
	wantGet(t, pCli, "c", "3")
}

func TestProxy(t *testing.T) {
	c := New(t)
	direct := c.Client(t)
	p := NewProxy(t, c.Member(0).Endpoint())
	cli := newClient(t, []string{p.Endpoint()})

	put(t, cli, "k", "v")
	wantGet(t, cli, "k", "v")

	p.Pause()
	if _, err := cli.Get(ctxTimeout(t, 500*time.Millisecond), "k"); err == nil {
		t.Fatal("Get through a paused proxy succeeded")
	}
	wantGet(t, direct, "k", "v")
	put(t, direct, "k", "v2")

	p.Resume()
	wantGet(t, cli, "k", "v2")

	before := p.acceptedConns()
	p.Reset()
	wantGet(t, cli, "k", "v2")
	if after := p.acceptedConns(); after <= before {
		t.Fatalf("no new connection after Reset (accepted %d, then %d)", before, after)
	}
}

func TestProxyTargetForms(t *testing.T) {
	c := New(t)
	host := c.Member(0).Endpoint()[len("http://"):]
	p := NewProxy(t, host)
	cli := newClient(t, []string{p.Endpoint()})
	put(t, cli, "k", "v")
	wantGet(t, cli, "k", "v")
	p.Close()
	p.Close() // idempotent; cleanup calls it again
}

// TestRestartEmpty: the member comes back without its data, with the
// cluster id it had, and its revision starts again.
func TestRestartEmpty(t *testing.T) {
	c := New(t)
	cli := c.Client(t)
	for i := range 5 {
		put(t, cli, "k", string(rune('a'+i)))
	}
	before, err := cli.Get(ctxTimeout(t, 10*time.Second), "k")
	if err != nil {
		t.Fatal(err)
	}
	c.Member(0).RestartEmpty(t)
	after, err := cli.Get(ctxTimeout(t, 10*time.Second), "k")
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Kvs) != 0 {
		t.Errorf("after RestartEmpty k = %q, want no key", after.Kvs[0].Value)
	}
	if after.Header.ClusterId != before.Header.ClusterId {
		t.Errorf("cluster id %x after RestartEmpty, want %x as before", after.Header.ClusterId, before.Header.ClusterId)
	}
	if after.Header.Revision >= before.Header.Revision {
		t.Errorf("revision %d after RestartEmpty, want below %d", after.Header.Revision, before.Header.Revision)
	}
}
