package discovery

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/resolver"

	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/registry"
)

func TestBuildRejectsBadTargets(t *testing.T) {
	c := etcdtest.New(t)
	b, err := NewBuilder(c.Client(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		u    url.URL
		want string
	}{
		{url.URL{Scheme: Scheme, Host: "etcd1", Path: "/user"}, "authority"},
		{url.URL{Scheme: Scheme, Path: "/user/v2"}, "contains '/'"},
		{url.URL{Scheme: Scheme, Path: "/"}, "service name is empty"},
	} {
		r, err := b.Build(resolver.Target{URL: tc.u}, newFakeCC(), resolver.BuildOptions{})
		if err == nil {
			r.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Build(%s) = %v, want error containing %q", tc.u.String(), err, tc.want)
		}
	}
	if _, err := NewBuilder(nil); err == nil {
		t.Error("NewBuilder(nil) accepted")
	}
	for _, tc := range []struct {
		opt  Option
		want string
	}{
		{WithPrefix("/"), `prefix "/"`},
		{WithRequestTimeout(0), "request timeout"},
		{WithBackoff(time.Second, time.Millisecond), "backoff base 1s, max 1ms"},
		{WithResetGrace(-time.Second), "reset grace"},
		{WithUpdateInterval(-time.Millisecond), "update interval -1ms"},
	} {
		if _, err := NewBuilder(c.Client(t), tc.opt); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewBuilder with a bad option = %v, want an error containing %q", err, tc.want)
		}
	}
}

// TestSeparateChangesArePaced: changes that are each their own etcd event
// and follow a push within the update interval are held and reach grpc
// together; under a steady stream of changes pushes still go out while it
// lasts; an instance registered and gone within one never reaches grpc
// and makes no update; and a change after a quiet spell is not held.
// Nothing here reads a clock: holds are seen through the resolver's hooks.
func TestSeparateChangesArePaced(t *testing.T) {
	const interval = 3 * time.Second
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	putInstance(t, cli, "user", addr(0), registry.Metadata{})
	// Signals of held changes let go; set before the resolver starts, and
	// unset after it stops (cleanups run last first).
	flushed := make(chan bool, 64)
	hookFlushed = func(pushed bool) {
		select {
		case flushed <- pushed:
		default:
		}
	}
	t.Cleanup(func() { hookFlushed = nil })
	heldC := onHeld(t)
	b, err := NewBuilder(cli, WithUpdateInterval(interval))
	if err != nil {
		t.Fatal(err)
	}
	cc := newFakeCC()
	build(t, b, "user", cc)
	want := []string{addr(0)}
	cc.waitAddrs(t, 20*time.Second, want...)
	before := cc.updates()

	// Ten registrations, one Put each, right after the first list: held
	// (the first one, within the interval of the list's push), and
	// pushed together.
	for i := 1; i <= 10; i++ {
		putInstance(t, cli, "user", addr(i), registry.Metadata{})
		want = append(want, addr(i))
	}
	select {
	case <-heldC:
	case <-time.After(20 * time.Second):
		t.Fatal("registrations within the interval after a push were not held")
	}
	cc.waitAddrs(t, 20*time.Second, want...)
	if got := cc.updates() - before; got != 1 {
		t.Errorf("10 registrations within the interval reached grpc as %d updates, want 1", got)
	}

	// A steady stream, one change every interval/5: it must not hold
	// everything back until the stream stops. The stream goes on until
	// an update arrives, for at most 60 changes (12 intervals).
	before = cc.updates()
	tick := time.NewTicker(interval / 5)
	for i := 11; cc.updates() == before; i++ {
		if i > 70 {
			t.Fatalf("no update during a stream of 60 changes, one every %s", interval/5)
		}
		<-tick.C
		putInstance(t, cli, "user", addr(i), registry.Metadata{})
		want = append(want, addr(i))
	}
	tick.Stop()
	cc.waitAddrs(t, 20*time.Second, want...)

	// Within the interval of that push an instance comes and goes: it
	// never reaches grpc, and no update is made for it. Then, after a
	// quiet spell, one change: it goes at once.
	before = cc.updates()
	putInstance(t, cli, "user", addr(150), registry.Metadata{})
	if _, err := cli.Delete(ctxT(t, 5*time.Second), registry.Key(registry.DefaultPrefix, "user", addr(150))); err != nil {
		t.Fatal(err)
	}
	// Wait for the hold to end. A signal of a push from before this
	// phase may still come first; a push in it is the failure.
	for done := false; !done; {
		select {
		case pushed := <-flushed:
			switch {
			case !pushed:
				done = true
			case cc.updates() > before:
				t.Fatal("an instance that came and went within the interval made an update")
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the held changes were never let go")
		}
	}
	// The hold ended a full interval after the last push: a change now
	// follows a quiet spell, and goes at once, never held.
	for len(heldC) > 0 {
		<-heldC
	}
	putInstance(t, cli, "user", addr(99), registry.Metadata{})
	cc.waitAddrs(t, 20*time.Second, append(want, addr(99))...)
	if len(heldC) > 0 {
		t.Error("a change after a quiet spell was held")
	}
	cc.mu.Lock()
	for _, st := range cc.states[before:] {
		if slices.Contains(addrsOf(st), addr(150)) {
			t.Errorf("an instance registered and gone within the interval reached grpc: %v", addrsOf(st))
		}
	}
	n := len(cc.states) - before
	cc.mu.Unlock()
	if n != 1 {
		t.Errorf("an instance that came and went, then one change, reached grpc as %d updates, want 1", n)
	}
}

// aFollower returns a member that is not the leader.
func aFollower(t *testing.T, c *etcdtest.Cluster) *etcdtest.Member {
	t.Helper()
	leader, err := c.Leader(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for i := range c.Size() {
		if m := c.Member(i); m != leader {
			return m
		}
	}
	t.Fatal("no follower")
	return nil
}

// TestLeaderLostWatchResumes: the member the client watches through loses
// its leader for longer than etcd lets a leader-requiring watch live; etcd
// cancels the watch (where etcd's naming resolver stops for good). The
// resolver keeps its list through the outage, watches again once a leader
// is back, and misses none of the changes made then.
func TestLeaderLostWatchResumes(t *testing.T) {
	c := etcdtest.New(t, etcdtest.Members(3))
	follower := aFollower(t, c)
	cli := newClient(t, []string{follower.Endpoint()})
	writer := c.Client(t)
	putInstance(t, writer, "user", addr(1), registry.Metadata{})
	putInstance(t, writer, "user", addr(2), registry.Metadata{})
	broken := make(chan error, 100)
	b, err := NewBuilder(cli, WithBackoff(50*time.Millisecond, 500*time.Millisecond), WithEventHandler(func(ev Event) {
		if ev.Kind == EventWatchBroken {
			select {
			case broken <- ev.Err:
			default:
			}
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	cc := newFakeCC()
	build(t, b, "user", cc)
	cc.waitAddrs(t, 20*time.Second, addr(1), addr(2))

	var others []*etcdtest.Member
	for i := range c.Size() {
		if m := c.Member(i); m != follower {
			others = append(others, m)
			m.Stop(t)
		}
	}
	select {
	case err := <-broken:
		// etcd's no-leader error, or the channel closed after it,
		// depending on which reaches the client first.
		t.Logf("without a leader: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the watch outlived the leader by 30 s")
	}
	for _, m := range others {
		m.Restart(t)
	}
	// Changes once a leader is back: one leaves, one comes, one changes.
	retry(t, func() error {
		_, err := writer.Delete(ctxT(t, 2*time.Second), registry.Key(registry.DefaultPrefix, "user", addr(1)))
		return err
	})
	retry(t, func() error { return tryPut(writer, "user", addr(3), registry.Metadata{}) })
	retry(t, func() error { return tryPut(writer, "user", addr(2), registry.Metadata{Zone: "after"}) })
	s := cc.waitAddrs(t, 20*time.Second, addr(2), addr(3))
	// The zone change may come in a later update than the other two.
	waitZone := time.After(10 * time.Second)
	for Zone(s.Endpoints[0]) != "after" {
		select {
		case <-cc.signal: // every update signals; the last is read again
		case <-waitZone:
			t.Fatalf("the last change never arrived: %v", s.Endpoints[0])
		}
		s, _ = cc.last()
	}
	// Never an empty list, through all of it.
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for i, st := range cc.states {
		if len(st.Endpoints) == 0 {
			t.Errorf("update %d of %d was empty", i+1, len(cc.states))
		}
	}
}

// TestHeldChangesGoOutWhenTheWatchEnds: a change held back by the update
// interval reaches grpc when the watch ends without a new list (here the
// member the client watches through loses its leader for good: the other
// two stop), not when the next change comes, which may be never.
func TestHeldChangesGoOutWhenTheWatchEnds(t *testing.T) {
	const interval = time.Minute
	c := etcdtest.New(t, etcdtest.Members(3))
	follower := aFollower(t, c)
	cli := newClient(t, []string{follower.Endpoint()})
	writer := c.Client(t)
	putInstance(t, writer, "user", addr(1), registry.Metadata{})
	heldC := onHeld(t)
	b, err := NewBuilder(cli, WithUpdateInterval(interval))
	if err != nil {
		t.Fatal(err)
	}
	cc := newFakeCC()
	r := build(t, b, "user", cc)
	cc.waitAddrs(t, 20*time.Second, addr(1))

	putInstance(t, writer, "user", addr(2), registry.Metadata{})
	select {
	case <-heldC:
	case <-time.After(30 * time.Second):
		t.Fatal("the change was not held")
	}
	for i := range c.Size() {
		if m := c.Member(i); m != follower {
			m.Stop(t)
		}
	}
	cc.waitAddrs(t, 20*time.Second, addr(1), addr(2))
	r.Close()
}

func TestListsAndFollowsChangesWithMetadata(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	putInstance(t, cli, "user", addr(2), registry.Metadata{Version: "v2", Zone: "z2", Region: "r", Weight: 20, Labels: map[string]string{"shard": "2"}})
	putInstance(t, cli, "user", addr(1), registry.Metadata{Version: "v1", Zone: "z1"})
	putInstance(t, cli, "order", addr(9), registry.Metadata{}) // another service
	// No update pacing: a no-op PUT below must not be hidden by being
	// held with the change after it.
	b, _ := NewBuilder(cli, WithUpdateInterval(0))
	cc := newFakeCC()
	build(t, b, "user", cc)

	s := cc.waitAddrs(t, 20*time.Second, addr(1), addr(2))
	in, ok := Instance(s.Endpoints[1])
	if !ok || in.Service != "user" || in.ID != addr(2) || in.Metadata.Version != "v2" || in.Metadata.Zone != "z2" ||
		in.Metadata.Region != "r" || in.Metadata.Status != registry.StatusServing ||
		in.Metadata.Weight != 20 || in.Metadata.Labels["shard"] != "2" || Weight(s.Endpoints[0]) != registry.DefaultWeight {
		t.Errorf("metadata of %s: %+v", addr(2), in)
	}
	if Region(s.Endpoints[1]) != "r" || Zone(s.Endpoints[1]) != "z2" || Version(s.Endpoints[1]) != "v2" || Weight(s.Endpoints[1]) != 20 {
		t.Errorf("accessors of %s: region %q zone %q version %q weight %d", addr(2),
			Region(s.Endpoints[1]), Zone(s.Endpoints[1]), Version(s.Endpoints[1]), Weight(s.Endpoints[1]))
	}

	putInstance(t, cli, "user", addr(3), registry.Metadata{})
	cc.waitAddrs(t, 20*time.Second, addr(1), addr(2), addr(3))
	if _, err := cli.Delete(ctxT(t, 5*time.Second), registry.Key(registry.DefaultPrefix, "user", addr(1))); err != nil {
		t.Fatal(err)
	}
	cc.waitAddrs(t, 20*time.Second, addr(2), addr(3))

	// Draining leaves the list; if every instance drains, all are offered.
	putInstance(t, cli, "user", addr(2), registry.Metadata{Status: registry.StatusDraining})
	cc.waitAddrs(t, 20*time.Second, addr(3))
	putInstance(t, cli, "user", addr(3), registry.Metadata{Status: registry.StatusDraining})
	cc.waitAddrs(t, 20*time.Second, addr(2), addr(3))

	// A PUT that changes nothing pushes nothing.
	n := cc.updates()
	putInstance(t, cli, "user", addr(3), registry.Metadata{Status: registry.StatusDraining})
	putInstance(t, cli, "user", addr(4), registry.Metadata{}) // a real change, as a marker
	cc.waitAddrs(t, 20*time.Second, addr(4))
	if got := cc.updates() - n; got != 1 {
		t.Errorf("%d pushes for one no-op PUT and one change, want 1", got)
	}
}

// TestNoEventLostBetweenListAndWatch changes etcd after the list and before
// the watch starts: the watch, from the list's revision + 1, sees it.
func TestNoEventLostBetweenListAndWatch(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	putInstance(t, cli, "user", addr(1), registry.Metadata{})
	putInstance(t, cli, "user", addr(2), registry.Metadata{})
	first := true
	hookAfterList = func() {
		if !first {
			return
		}
		first = false
		if err := tryPut(cli, "user", addr(3), registry.Metadata{}); err != nil {
			t.Error(err) // not Fatal: this runs on the resolver's goroutine
		}
		if _, err := cli.Delete(ctxT(t, 5*time.Second), registry.Key(registry.DefaultPrefix, "user", addr(1))); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { hookAfterList = nil })
	b, _ := NewBuilder(cli)
	cc := newFakeCC()
	r := build(t, b, "user", cc)
	cc.waitAddrs(t, 20*time.Second, addr(2), addr(3))
	r.Close()
}

// TestCompactionPastTheWatcher compacts etcd past the revision the watch
// starts from: the resolver lists again and ends up right.
func TestCompactionPastTheWatcher(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	putInstance(t, cli, "user", addr(1), registry.Metadata{})
	putInstance(t, cli, "user", addr(2), registry.Metadata{})
	first := true
	hookAfterList = func() {
		if !first {
			return
		}
		first = false
		if err := tryPut(cli, "user", addr(3), registry.Metadata{}); err != nil {
			t.Error(err) // not Fatal: this runs on the resolver's goroutine
		}
		resp, err := cli.Delete(ctxT(t, 5*time.Second), registry.Key(registry.DefaultPrefix, "user", addr(2)))
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := cli.Compact(ctxT(t, 5*time.Second), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { hookAfterList = nil })
	var events []Event
	b, _ := NewBuilder(cli, WithEventHandler(func(ev Event) { events = append(events, ev) }))
	cc := newFakeCC()
	r := build(t, b, "user", cc)
	cc.waitAddrs(t, 20*time.Second, addr(1), addr(3))
	r.Close()
	listed := 0
	for _, ev := range events {
		if ev.Kind == EventListed {
			listed++
		}
	}
	if listed != 2 {
		t.Errorf("%d lists, want 2 (the first, and one after the compaction): %v", listed, events)
	}
}

func TestMalformedValuesAreSkipped(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	ctx := ctxT(t, 10*time.Second)
	putInstance(t, cli, "user", addr(1), registry.Metadata{})
	bad := map[string]string{
		"/services/user/a":      "{not json",
		"/services/user/b":      `{"Metadata":{}}`,
		"/services/user/c":      `{"Addr":"no-port"}`,
		"/services/user/d":      `{"Addr":"127.0.0.1:1","Metadata":{"weight":"heavy"}}`,
		"/services/user/e/f":    `{"Addr":"127.0.0.1:2"}`,
		"/services/user/" + "g": `{"Addr":"127.0.0.1:30002","Metadata":"foreign metadata"}`,
	}
	for k, v := range bad {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	skipped := make(chan string, 16)
	b, _ := NewBuilder(cli, WithEventHandler(func(ev Event) {
		if ev.Kind == EventSkipped {
			skipped <- ev.Key + ": " + ev.Err.Error()
		}
	}))
	cc := newFakeCC()
	build(t, b, "user", cc)
	// g has foreign metadata but a good address: it is kept, with defaults.
	cc.waitAddrs(t, 20*time.Second, addr(1), addr(2))
	if len(skipped) != 5 {
		t.Errorf("%d skipped, want 5", len(skipped))
	}
	for range len(skipped) {
		t.Logf("skipped %s", <-skipped)
	}
	// A good instance overwritten with garbage leaves the list.
	if _, err := cli.Put(ctx, registry.Key(registry.DefaultPrefix, "user", addr(1)), "garbage"); err != nil {
		t.Fatal(err)
	}
	cc.waitAddrs(t, 20*time.Second, addr(2))
}

// TestFiveThousandInstances: the first list is complete, and one change
// afterwards reaches grpc as one update.
func TestFiveThousandInstances(t *testing.T) {
	const n = 5000
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	ctx := ctxT(t, 60*time.Second)
	want := make([]string, 0, n+1)
	for start := 0; start < n; start += 100 {
		var ops []clientv3.Op
		for i := start; i < start+100; i++ {
			v, _ := registry.Encode(addr(i), registry.Metadata{Weight: 100, Status: registry.StatusServing, Zone: fmt.Sprintf("z%d", i%3)})
			ops = append(ops, clientv3.OpPut(registry.Key(registry.DefaultPrefix, "user", addr(i)), string(v)))
			want = append(want, addr(i))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var lists, updates []Event
	updated := make(chan struct{}, 1)
	b, _ := NewBuilder(cli, WithEventHandler(func(ev Event) {
		mu.Lock()
		defer mu.Unlock()
		switch ev.Kind {
		case EventListed:
			lists = append(lists, ev)
		case EventUpdated:
			updates = append(updates, ev)
			select {
			case updated <- struct{}{}:
			default:
			}
		}
	}))
	cc := newFakeCC()
	build(t, b, "user", cc)
	first := cc.waitAddrs(t, 30*time.Second, want...)
	before := cc.updates()
	putInstance(t, cli, "user", addr(n), registry.Metadata{})
	next := cc.waitAddrs(t, 20*time.Second, append(want, addr(n))...)
	if got := cc.updates() - before; got != 1 {
		t.Errorf("one change reached grpc as %d updates, want 1", got)
	}
	// Incremental: the change came from the watch as one change, not from
	// reading the service again, and the other 5,000 endpoints are the
	// ones grpc already had. (The event follows the push.)
	select {
	case <-updated:
	case <-time.After(30 * time.Second):
		t.Fatal("no update event after the push")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lists) != 1 || len(updates) != 1 || updates[0].Changes != 1 {
		t.Errorf("lists %v, updates %v; want the first list, then one update of one change", lists, updates)
	}
	if !sameEndpoints(first.Endpoints, next.Endpoints[:n]) {
		t.Error("the endpoints of unchanged instances were built again")
	}
}

// TestBurstIsCoalesced: changes committed together reach grpc together.
func TestBurstIsCoalesced(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	putInstance(t, cli, "user", addr(0), registry.Metadata{})
	b, _ := NewBuilder(cli)
	cc := newFakeCC()
	build(t, b, "user", cc)
	cc.waitAddrs(t, 20*time.Second, addr(0))
	before := cc.updates()
	var ops []clientv3.Op
	want := []string{addr(0)}
	for i := 1; i <= 50; i++ {
		v, _ := registry.Encode(addr(i), registry.Metadata{Weight: 1, Status: registry.StatusServing})
		ops = append(ops, clientv3.OpPut(registry.Key(registry.DefaultPrefix, "user", addr(i)), string(v)))
		want = append(want, addr(i))
	}
	if _, err := cli.Txn(ctxT(t, 5*time.Second)).Then(ops...).Commit(); err != nil {
		t.Fatal(err)
	}
	cc.waitAddrs(t, 20*time.Second, want...)
	if got := cc.updates() - before; got != 1 {
		t.Errorf("50 changes in one transaction reached grpc as %d updates, want 1", got)
	}
}

// TestStartsWhileEtcdIsDown: Build returns while its first request to etcd
// is still waiting (an hour's timeout); the error reaches grpc; the list
// arrives when etcd does.
func TestStartsWhileEtcdIsDown(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	putInstance(t, cli, "user", addr(1), registry.Metadata{})
	c.Member(0).Stop(t)

	slow, _ := NewBuilder(cli, WithRequestTimeout(time.Hour))
	built := make(chan resolver.Resolver, 1)
	go func() {
		r, err := slow.Build(resolver.Target{URL: url.URL{Scheme: Scheme, Path: "/user"}}, newFakeCC(), resolver.BuildOptions{})
		if err != nil {
			t.Error(err)
		}
		built <- r
	}()
	select {
	case r := <-built:
		if r != nil {
			r.Close()
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Build blocked while etcd was down")
	}

	b, _ := NewBuilder(cli, WithRequestTimeout(300*time.Millisecond))
	cc := newFakeCC()
	build(t, b, "user", cc)
	deadline := time.After(30 * time.Second)
	for {
		cc.mu.Lock()
		got := hasErr(cc.errs, "list /services/user/ from etcd")
		cc.mu.Unlock()
		if got {
			break
		}
		select {
		case <-cc.signal:
		case <-deadline:
			t.Fatal("no error reported while etcd was down")
		}
	}
	if _, ok := cc.last(); ok {
		t.Fatal("a state was pushed while etcd was down")
	}
	c.Member(0).Restart(t)
	cc.waitAddrs(t, 20*time.Second, addr(1))
}

// TestSnapshotServesWhenEtcdIsDownAtStart: a resolver saves its list; a new
// one, started while etcd is down, serves it, then switches to live data.
func TestSnapshotServesWhenEtcdIsDownAtStart(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	dir := t.TempDir()
	putInstance(t, cli, "user", addr(1), registry.Metadata{Zone: "z1"})
	putInstance(t, cli, "user", addr(2), registry.Metadata{})
	b, _ := NewBuilder(cli, WithSnapshotDir(dir), WithRequestTimeout(300*time.Millisecond))
	cc := newFakeCC()
	r := build(t, b, "user", cc)
	cc.waitAddrs(t, 20*time.Second, addr(1), addr(2))
	r.Close() // flushes the snapshot
	data, err := os.ReadFile(filepath.Join(dir, "user.json"))
	if err != nil || !strings.Contains(string(data), addr(1)) {
		t.Fatalf("snapshot: %s, %v", data, err)
	}

	// etcd moves on after the snapshot: addr(2) leaves.
	if _, err := cli.Delete(ctxT(t, 5*time.Second), registry.Key(registry.DefaultPrefix, "user", addr(2))); err != nil {
		t.Fatal(err)
	}
	c.Member(0).Stop(t)
	var stale []Event
	b2, _ := NewBuilder(cli, WithSnapshotDir(dir), WithRequestTimeout(300*time.Millisecond),
		WithEventHandler(func(ev Event) {
			if ev.Kind == EventStale {
				stale = append(stale, ev)
			}
		}))
	cc2 := newFakeCC()
	r2 := build(t, b2, "user", cc2)
	s := cc2.waitAddrs(t, 20*time.Second, addr(1), addr(2))
	if Zone(s.Endpoints[0]) != "z1" {
		t.Errorf("metadata lost through the snapshot: %v", s.Endpoints[0])
	}
	// Live data differs from the snapshot: once etcd answers, it wins,
	// and the instance only the snapshot had leaves.
	c.Member(0).Restart(t)
	putInstance(t, cli, "user", addr(3), registry.Metadata{})
	cc2.waitAddrs(t, 20*time.Second, addr(1), addr(3))
	r2.Close()
	if len(stale) != 1 || !strings.Contains(stale[0].Err.Error(), "serving 2 instances from") {
		t.Errorf("stale events: %v", stale)
	}
}

// TestEtcdWipedKeepsInstancesForGrace: etcd comes back empty; the resolver
// keeps what it knew until the registrars put it back, and never pushes an
// empty list.
func TestEtcdWipedKeepsInstancesForGrace(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	putInstance(t, cli, "user", addr(1), registry.Metadata{})
	putInstance(t, cli, "user", addr(2), registry.Metadata{})
	resets := make(chan Event, 4)
	b, _ := NewBuilder(cli, WithResetGrace(3*time.Second), WithEventHandler(func(ev Event) {
		if ev.Kind == EventReset {
			resets <- ev
		}
	}))
	cc := newFakeCC()
	build(t, b, "user", cc)
	cc.waitAddrs(t, 20*time.Second, addr(1), addr(2))
	c.Member(0).RestartWiped(t)
	select {
	case ev := <-resets:
		t.Logf("%v", ev)
	case <-time.After(15 * time.Second):
		t.Fatal("no reset event after etcd was wiped")
	}
	putInstance(t, cli, "user", addr(2), registry.Metadata{}) // re-registered; addr(1) is not
	cc.waitAddrs(t, 20*time.Second, addr(2))
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for i, s := range cc.states {
		if len(s.Endpoints) == 0 {
			t.Errorf("state %d is empty", i)
		}
	}
}

// TestLeaderKilledWatchResumes: in a 3-member cluster, the leader is
// killed and changes are made during and after the election; the list ends
// up exactly as etcd has it.
func TestLeaderKilledWatchResumes(t *testing.T) {
	c := etcdtest.New(t, etcdtest.Members(3))
	cli := newClient(t, c.Endpoints())
	writer := c.Client(t)
	putInstance(t, writer, "user", addr(1), registry.Metadata{})
	putInstance(t, writer, "user", addr(2), registry.Metadata{})
	b, _ := NewBuilder(cli)
	cc := newFakeCC()
	build(t, b, "user", cc)
	cc.waitAddrs(t, 20*time.Second, addr(1), addr(2))

	c.StopLeader(t)
	// Changes during the election, retried until a leader takes them.
	retry(t, func() error { return tryPut(writer, "user", addr(3), registry.Metadata{}) })
	retry(t, func() error {
		_, err := writer.Delete(ctxT(t, 2*time.Second), registry.Key(registry.DefaultPrefix, "user", addr(1)))
		return err
	})
	retry(t, func() error { return tryPut(writer, "user", addr(4), registry.Metadata{Zone: "after"}) })
	s := cc.waitAddrs(t, 15*time.Second, addr(2), addr(3), addr(4))
	if Zone(s.Endpoints[2]) != "after" {
		t.Errorf("metadata of the last change: %v", s.Endpoints[2])
	}
}

// TestGlobalBuilderWithPrefixFilterAndLogger: the Builder RegisterGlobal
// installs is the one grpc finds for the lodestar scheme; it reads only
// its prefix, offers only what its filter keeps, and logs to its logger.
func TestGlobalBuilderWithPrefixFilterAndLogger(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	const prefix = "/teams/search"
	put := func(prefix, a string, md registry.Metadata) {
		md.Weight, md.Status = 1, registry.StatusServing
		v, err := registry.Encode(a, md)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctxT(t, 5*time.Second), registry.Key(prefix, "user", a), string(v)); err != nil {
			t.Fatal(err)
		}
	}
	put(prefix, addr(1), registry.Metadata{Zone: "a"})
	put(prefix, addr(2), registry.Metadata{Zone: "hidden"})
	put(registry.DefaultPrefix, addr(3), registry.Metadata{Zone: "a"}) // another prefix
	if _, err := cli.Put(ctxT(t, 5*time.Second), registry.Key(prefix, "user", "broken"), "{"); err != nil {
		t.Fatal(err)
	}
	var logged syncBuffer
	_, err := RegisterGlobal(cli, WithPrefix(prefix+"/"), // a trailing slash is allowed
		WithFilter(func(in registry.Instance) bool { return in.Metadata.Zone != "hidden" }),
		WithLogger(slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(Target("user"))
	b := resolver.Get(u.Scheme)
	if b == nil {
		t.Fatal("no resolver registered for the lodestar scheme")
	}
	cc := newFakeCC()
	r, err := b.Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	cc.waitAddrs(t, 20*time.Second, addr(1))
	put(prefix, addr(4), registry.Metadata{Zone: "b"})
	put(prefix, addr(1), registry.Metadata{Zone: "hidden"}) // now filtered out
	cc.waitAddrs(t, 20*time.Second, addr(4))
	r.Close()
	if out := logged.String(); !strings.Contains(out, "discovery: skipped") || !strings.Contains(out, registry.Key(prefix, "user", "broken")) {
		t.Errorf("the logger got %q, want the skipped value's key", out)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger's goroutine and a test's.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// refusingCC is a fakeCC whose UpdateState refuses lists while refuse
// says so, as grpc does when its balancer refuses them; accepted signals
// each list it takes.
type refusingCC struct {
	*fakeCC
	refuse   func() bool
	mu       sync.Mutex
	accepted []resolver.State
	ok       chan struct{}
}

func newRefusingCC(refuse func() bool) *refusingCC {
	return &refusingCC{fakeCC: newFakeCC(), refuse: refuse, ok: make(chan struct{}, 1)}
}

func (c *refusingCC) UpdateState(s resolver.State) error {
	c.fakeCC.UpdateState(s)
	if c.refuse() {
		return errors.New("refused by the test")
	}
	c.mu.Lock()
	c.accepted = append(c.accepted, s)
	c.mu.Unlock()
	select {
	case c.ok <- struct{}{}:
	default:
	}
	return nil
}

// waitAccepted waits until the last list taken has exactly addrs.
func (c *refusingCC) waitAccepted(t *testing.T, timeout time.Duration, addrs ...string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		var got []string
		if n := len(c.accepted); n > 0 {
			got = addrsOf(c.accepted[n-1])
		}
		c.mu.Unlock()
		if slices.Equal(got, addrs) {
			return
		}
		select {
		case <-c.ok:
		case <-deadline:
			t.Fatalf("accepted list %v after %s, want %v", got, timeout, addrs)
		}
	}
}

// TestRefusedListCarriesHeldChanges: a change held back by the update
// interval while grpc refuses the list goes out with the list offered
// again, not an interval later.
func TestRefusedListCarriesHeldChanges(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	putInstance(t, cli, "user", addr(1), registry.Metadata{})
	var refusing atomic.Bool
	refusing.Store(true)
	heldC := onHeld(t)
	b, err := NewBuilder(cli, WithUpdateInterval(time.Minute), WithBackoff(20*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	cc := newRefusingCC(refusing.Load)
	build(t, b, "user", cc)
	cc.waitAddrs(t, 20*time.Second, addr(1)) // offered, refused
	putInstance(t, cli, "user", addr(2), registry.Metadata{})
	select {
	case <-heldC:
	case <-time.After(30 * time.Second):
		t.Fatal("the change was not held")
	}
	refusing.Store(false)
	cc.waitAccepted(t, 20*time.Second, addr(1), addr(2))
}

// TestRefusedSnapshotListOfferedAgainWhileEtcdIsDown: a list served from
// the snapshot file that grpc refuses is offered again while etcd stays
// away, and grpc hears why no other list comes.
func TestRefusedSnapshotListOfferedAgainWhileEtcdIsDown(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	dir := t.TempDir()
	putInstance(t, cli, "user", addr(1), registry.Metadata{})
	b, _ := NewBuilder(cli, WithSnapshotDir(dir))
	cc := newFakeCC()
	r := build(t, b, "user", cc)
	cc.waitAddrs(t, 20*time.Second, addr(1))
	r.Close() // flushes the snapshot
	c.Member(0).Stop(t)

	var refusals atomic.Int32
	b2, _ := NewBuilder(cli, WithSnapshotDir(dir), WithRequestTimeout(200*time.Millisecond), WithBackoff(20*time.Millisecond, 100*time.Millisecond))
	cc2 := newRefusingCC(func() bool { return refusals.Add(1) <= 2 })
	build(t, b2, "user", cc2)
	cc2.waitAccepted(t, 20*time.Second, addr(1))
	cc2.mu.Lock()
	cc2.fakeCC.mu.Lock()
	reported := hasErr(cc2.fakeCC.errs, "list /services/user/ from etcd")
	cc2.fakeCC.mu.Unlock()
	cc2.mu.Unlock()
	if !reported {
		t.Error("grpc was not told why the refused list was not replaced")
	}
}
