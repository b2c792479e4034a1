package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/registry"
)

// events collects a resolver's events and signals each one.
type events struct {
	mu     sync.Mutex
	all    []Event
	signal chan struct{}
}

func newEvents() *events { return &events{signal: make(chan struct{}, 1)} }

func (l *events) add(ev Event) {
	l.mu.Lock()
	l.all = append(l.all, ev)
	l.mu.Unlock()
	select {
	case l.signal <- struct{}{}:
	default:
	}
}

// wait waits until an event satisfies ok, and returns it.
func (l *events) wait(t testing.TB, timeout time.Duration, what string, ok func(Event) bool) Event {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		l.mu.Lock()
		evs := l.all[seen:]
		seen = len(l.all)
		l.mu.Unlock()
		for _, ev := range evs {
			if ok(ev) {
				return ev
			}
		}
		select {
		case <-l.signal:
		case <-deadline.C:
			t.Fatalf("no %s within %s", what, timeout)
		}
	}
}

// TestEtcdRestartedEmptyPastTheRevision: the client is cut off from etcd;
// etcd restarts without its data and with its usual configuration (so the
// same cluster id); instances register again and other writes take its
// revision past the one the client had; then the link comes back. The
// etcd client resumes its watch from the old revision in a history that
// is not the one the list came from; the resolver notices (EventReset),
// serves the instance registered while it was away (at a revision below
// the old one: the resumed watch never shows it) and drops the dead one.
func TestEtcdRestartedEmptyPastTheRevision(t *testing.T) {
	c, writer, p, log, cc := behindProxy(t, time.Second) // addr(1) dies with the data
	listed := log.wait(t, 10*time.Second, "first list", func(ev Event) bool { return ev.Kind == EventListed })

	p.Pause()
	c.Member(0).RestartEmpty(t)
	// The new history: addr(3) and addr(2) register first, at revisions
	// the client has already passed, then other services' writes take the
	// revision past the client's.
	putInstance(t, writer, "user", addr(3), registry.Metadata{})
	putInstance(t, writer, "user", addr(2), registry.Metadata{})
	for i := range 10 {
		putInstance(t, writer, "other", addr(100+i), registry.Metadata{})
	}
	resp, err := writer.Get(ctxT(t, 5*time.Second), "/", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Revision <= listed.Revision {
		t.Fatalf("etcd at revision %d, not past the client's %d: the case is not set up", resp.Header.Revision, listed.Revision)
	}
	p.Resume()

	ev := log.wait(t, 30*time.Second, "reset event", func(ev Event) bool { return ev.Kind == EventReset })
	t.Logf("%v", ev)
	cc.waitAddrs(t, 30*time.Second, addr(2), addr(3))
	// Never an empty list on the way.
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for i, s := range cc.states {
		if len(s.Endpoints) == 0 {
			t.Errorf("state %d is empty", i)
		}
	}
}

// TestEtcdLostDataBehindTheGoneInstances: as above, but the new history
// holds none of the service's instances at a revision the client had
// passed: only instances gone tell the two histories apart (etcd had
// them, at the revisions the list knew, in the history the list came
// from; the new etcd did not).
func TestEtcdLostDataBehindTheGoneInstances(t *testing.T) {
	c, writer, p, log, cc := behindProxy(t, time.Second)
	listed := log.wait(t, 10*time.Second, "first list", func(ev Event) bool { return ev.Kind == EventListed })

	p.Pause()
	c.Member(0).RestartEmpty(t)
	for i := range int(listed.Revision) + 2 {
		putInstance(t, writer, "other", addr(100+i), registry.Metadata{})
	}
	putInstance(t, writer, "user", addr(3), registry.Metadata{}) // past the client's revision
	p.Resume()
	ev := log.wait(t, 30*time.Second, "reset event", func(ev Event) bool { return ev.Kind == EventReset })
	t.Logf("%v", ev)
	// The instances the new etcd lacks are kept for the grace period,
	// then leave.
	cc.waitAddrs(t, 30*time.Second, addr(3))
}

// TestReconnectWithNothingLostIsNoReset: a reconnection to the same etcd,
// with instances gone and come while the client was away, re-reads the
// list and reports no reset: the gone ones leave at once.
func TestReconnectWithNothingLostIsNoReset(t *testing.T) {
	_, writer, p, log, cc := behindProxy(t, time.Hour)
	p.Pause()
	if _, err := writer.Delete(ctxT(t, 5*time.Second), registry.Key(registry.DefaultPrefix, "user", addr(1))); err != nil {
		t.Fatal(err)
	}
	putInstance(t, writer, "user", addr(3), registry.Metadata{})
	p.Reset() // the client's connection is cut
	p.Resume()
	log.wait(t, 30*time.Second, "list after the reconnection", func(ev Event) bool {
		return ev.Kind == EventWatchBroken && errors.Is(ev.Err, errReconnected)
	})
	cc.waitAddrs(t, 30*time.Second, addr(2), addr(3))
	log.mu.Lock()
	defer log.mu.Unlock()
	for _, ev := range log.all {
		if ev.Kind == EventReset {
			t.Errorf("a reconnection to the same etcd was taken for a reset: %v", ev)
		}
	}
}

// TestLeaderBackResumesWatchBeforeBackoff: the member the client watches
// through loses its leader; etcd cancels the watch. With a backoff of a
// minute, the watch is resumed, and the changes made once a leader is back
// arrive, long before the backoff ends: a linearizable read, answered as
// soon as the member has a leader again, ends the wait.
func TestLeaderBackResumesWatchBeforeBackoff(t *testing.T) {
	c := etcdtest.New(t, etcdtest.Members(3))
	follower := aFollower(t, c)
	cli := newClient(t, []string{follower.Endpoint()})
	writer := c.Client(t)
	putInstance(t, writer, "user", addr(1), registry.Metadata{})
	log := newEvents()
	b, err := NewBuilder(cli, WithBackoff(time.Minute, time.Minute), WithEventHandler(log.add))
	if err != nil {
		t.Fatal(err)
	}
	cc := newFakeCC()
	build(t, b, "user", cc)
	cc.waitAddrs(t, 10*time.Second, addr(1))

	var others []*etcdtest.Member
	for i := range c.Size() {
		if m := c.Member(i); m != follower {
			others = append(others, m)
			m.Stop(t)
		}
	}
	ev := log.wait(t, 30*time.Second, "broken watch", func(ev Event) bool { return ev.Kind == EventWatchBroken })
	t.Logf("without a leader: %v", ev.Err)
	for _, m := range others {
		m.Restart(t)
	}
	retry(t, func() error { return tryPut(writer, "user", addr(2), registry.Metadata{}) })
	// The backoff is 48-72 s; this bounds a hang well below it.
	cc.waitAddrs(t, 20*time.Second, addr(1), addr(2))
}

// recordHandler is a slog.Handler that keeps each record as the text
// handler writes it.
type recordHandler struct {
	mu      *sync.Mutex
	records *[]string
	attrs   []slog.Attr
}

func newRecordHandler() *recordHandler {
	return &recordHandler{mu: new(sync.Mutex), records: new([]string)}
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordHandler) Handle(ctx context.Context, rec slog.Record) error {
	var buf bytes.Buffer
	if err := slog.NewTextHandler(&buf, nil).WithAttrs(h.attrs).Handle(ctx, rec); err != nil {
		return err
	}
	h.mu.Lock()
	*h.records = append(*h.records, buf.String())
	h.mu.Unlock()
	return nil
}

func (h *recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordHandler{mu: h.mu, records: h.records, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h *recordHandler) WithGroup(string) slog.Handler { return h }

func (h *recordHandler) all() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(*h.records)
}

// TestHugeValueMakesSmallLogs: a value of 10 MiB (etcd's request limit
// raised to let it through) holding a bad address, put under a
// service key, makes log records and errors under 1 KiB that name the key,
// whether the value is over the size limit (skipped unread) or within it
// (its address refused), from the watch and from a list.
func TestHugeValueMakesSmallLogs(t *testing.T) {
	c := etcdtest.New(t, etcdtest.MaxRequestBytes(16<<20))
	cli := newClient(t, c.Endpoints())
	// The writer sends a request past clientv3's 2 MiB default.
	writer, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), MaxCallSendMsgSize: 16 << 20, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { writer.Close() })
	putInstance(t, cli, "user", addr(1), registry.Metadata{})
	const size = 10 << 20
	key := registry.Key(registry.DefaultPrefix, "user", "huge")
	value := `{"Addr":"` + strings.Repeat("x", size) + `"}` // no port

	start := func(opts ...Option) (*recordHandler, *events, *fakeCC) {
		h, log := newRecordHandler(), newEvents()
		b, err := NewBuilder(cli, append(opts, WithLogger(slog.New(h)), WithEventHandler(log.add))...)
		if err != nil {
			t.Fatal(err)
		}
		cc := newFakeCC()
		build(t, b, "user", cc)
		cc.waitAddrs(t, 10*time.Second, addr(1))
		return h, log, cc
	}
	type run struct {
		name string
		h    *recordHandler
		log  *events
		cc   *fakeCC
		want string
	}
	var runs []run
	h, log, cc := start()
	runs = append(runs, run{"watch, over the size limit", h, log, cc, "over the limit"})
	h, log, cc = start(WithMaxValueBytes(16 << 20))
	runs = append(runs, run{"watch, address refused", h, log, cc, "want host:port"})
	if _, err := writer.Put(ctxT(t, 30*time.Second), key, value); err != nil {
		t.Fatal(err)
	}
	h, log, cc = start(WithMaxValueBytes(16 << 20))
	runs = append(runs, run{"list, address refused", h, log, cc, "want host:port"})
	h, log, cc = start()
	runs = append(runs, run{"list, over the size limit", h, log, cc, "over the limit"})

	for _, r := range runs {
		ev := r.log.wait(t, 10*time.Second, r.name+": skipped event", func(ev Event) bool { return ev.Kind == EventSkipped && ev.Key == key })
		if msg := ev.Err.Error(); len(msg) > 1024 || !strings.Contains(msg, key) || !strings.Contains(msg, r.want) {
			t.Errorf("%s: %d-byte error %.300q, want under 1 KiB, naming %s and saying %q", r.name, len(msg), msg, key, r.want)
		}
		if s := ev.String(); len(s) > 1024 {
			t.Errorf("%s: event string of %d bytes", r.name, len(s))
		}
		named := false
		for _, rec := range r.h.all() {
			if len(rec) > 1024 {
				t.Errorf("%s: log record of %d bytes: %.300q", r.name, len(rec), rec)
			}
			named = named || strings.Contains(rec, key) && strings.Contains(rec, "skipped")
		}
		if !named {
			t.Errorf("%s: no log record names %s: %q", r.name, key, r.h.all())
		}
		r.cc.mu.Lock()
		for _, err := range r.cc.errs {
			if len(err.Error()) > 1024 {
				t.Errorf("%s: error of %d bytes reported to grpc", r.name, len(err.Error()))
			}
		}
		r.cc.mu.Unlock()
	}
}

// TestPagedListIsOneRevision: a list read in pages of 7 keys, with keys
// added, changed and deleted after its first page (before and after the
// page being read), gives grpc the list one Get gives at the first page's
// revision; the watch then brings the changes.
func TestPagedListIsOneRevision(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	const n = 60
	var kvs [][2]string
	for i := range n {
		v, _ := registry.Encode(addr(i), registry.Metadata{Weight: 1, Status: registry.StatusServing})
		kvs = append(kvs, [2]string{registry.Key(registry.DefaultPrefix, "user", addr(i)), string(v)})
	}
	for _, kv := range kvs {
		if _, err := cli.Put(ctxT(t, 5*time.Second), kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	pages, changed := 0, false
	hookPage = func(int64) {
		pages++
		if changed {
			return
		}
		changed = true
		// Not Fatal: this runs on the resolver's goroutine.
		for _, i := range []int{0, 3, 40, 59} {
			if _, err := cli.Delete(ctxT(t, 5*time.Second), registry.Key(registry.DefaultPrefix, "user", addr(i))); err != nil {
				t.Error(err)
			}
		}
		for _, i := range []int{1, 45} {
			if err := tryPut(cli, "user", addr(i), registry.Metadata{Zone: "changed"}); err != nil {
				t.Error(err)
			}
		}
		for _, i := range []int{n, n + 1} {
			if err := tryPut(cli, "user", addr(i), registry.Metadata{}); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(func() { hookPage = nil })
	log := newEvents()
	b, err := NewBuilder(cli, withPageSize(7), WithUpdateInterval(0), WithEventHandler(log.add))
	if err != nil {
		t.Fatal(err)
	}
	cc := newFakeCC()
	build(t, b, "user", cc)
	listed := log.wait(t, 10*time.Second, "list", func(ev Event) bool { return ev.Kind == EventListed })
	cc.mu.Lock()
	first := cc.states[0]
	cc.mu.Unlock()
	at, err := cli.Get(ctxT(t, 5*time.Second), registry.ServicePrefix(registry.DefaultPrefix, "user"), clientv3.WithPrefix(), clientv3.WithRev(listed.Revision))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, kv := range at.Kvs {
		want = append(want, fmt.Sprintf("%s zone=%q", kv.Key, mustZone(t, kv.Value)))
	}
	var got []string
	for _, ep := range first.Endpoints {
		in, _ := Instance(ep)
		got = append(got, fmt.Sprintf("%s zone=%q", registry.Key(registry.DefaultPrefix, "user", in.ID), in.Metadata.Zone))
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("paged list at revision %d:\n got %q\nwant %q", listed.Revision, got, want)
	}
	if pages < n/7 {
		t.Errorf("%d pages of 7 keys for %d keys", pages, n)
	}
	// Then the watch, from the list's revision, brings what changed.
	var now []string
	for i := 1; i < n+2; i++ {
		if i != 3 && i != 40 && i != 59 {
			now = append(now, addr(i))
		}
	}
	s := cc.waitAddrs(t, 10*time.Second, now...)
	for _, ep := range s.Endpoints {
		if in, _ := Instance(ep); (in.ID == addr(1) || in.ID == addr(45)) != (in.Metadata.Zone == "changed") {
			t.Errorf("instance %s has zone %q", in.ID, in.Metadata.Zone)
		}
	}
}

func mustZone(t *testing.T, v []byte) string {
	t.Helper()
	_, md, err := registry.Decode(v)
	if err != nil {
		t.Fatal(err)
	}
	return md.Zone
}

// TestInstancesBeyondTheLimitAreLeftOut: a list keeps the first
// WithMaxInstances instances and reports the others in one event; a
// registration beyond the limit is left out and reported; one that finds
// room comes in.
func TestInstancesBeyondTheLimitAreLeftOut(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	for i := range 25 {
		putInstance(t, cli, "user", addr(i), registry.Metadata{})
	}
	log := newEvents()
	b, err := NewBuilder(cli, WithMaxInstances(10), withPageSize(4), WithEventHandler(log.add))
	if err != nil {
		t.Fatal(err)
	}
	cc := newFakeCC()
	build(t, b, "user", cc)
	var first []string
	for i := range 10 {
		first = append(first, addr(i))
	}
	cc.waitAddrs(t, 10*time.Second, first...)
	ev := log.wait(t, 10*time.Second, "limited event", func(ev Event) bool { return ev.Kind == EventLimited })
	if ev.Changes != 15 {
		t.Errorf("the list left out %d, want 15: %v", ev.Changes, ev)
	}
	log.mu.Lock()
	limited := 0
	for _, ev := range log.all {
		if ev.Kind == EventLimited {
			limited++
		}
	}
	log.mu.Unlock()
	if limited != 1 {
		t.Errorf("%d limited events for one list, want 1", limited)
	}

	putInstance(t, cli, "user", addr(50), registry.Metadata{})
	ev = log.wait(t, 10*time.Second, "limited event for the watch", func(ev Event) bool { return ev.Kind == EventLimited && ev.Changes == 1 })
	t.Logf("%v", ev)
	if _, err := cli.Delete(ctxT(t, 5*time.Second), registry.Key(registry.DefaultPrefix, "user", addr(0))); err != nil {
		t.Fatal(err)
	}
	putInstance(t, cli, "user", addr(51), registry.Metadata{})
	cc.waitAddrs(t, 10*time.Second, append(first[1:], addr(51))...)

	if _, err := NewBuilder(cli, WithMaxInstances(0)); err == nil || !strings.Contains(err.Error(), "max instances 0") {
		t.Errorf("WithMaxInstances(0) = %v, want an error naming it", err)
	}
	if _, err := NewBuilder(cli, WithMaxValueBytes(-1)); err == nil || !strings.Contains(err.Error(), "max value bytes -1") {
		t.Errorf("WithMaxValueBytes(-1) = %v, want an error naming it", err)
	}
}

// behindProxy starts etcd with instances addr(1) and addr(2) of "user",
// and a resolver (reset grace as given, events to log) reaching etcd
// through a proxy, which a test pauses to cut it off; writer goes to etcd
// directly. It returns once the resolver has pushed both instances.
func behindProxy(t *testing.T, grace time.Duration) (*etcdtest.Cluster, *clientv3.Client, *etcdtest.Proxy, *events, *fakeCC) {
	t.Helper()
	c := etcdtest.New(t)
	writer := newClient(t, c.Endpoints())
	p := etcdtest.NewProxy(t, c.Member(0).Endpoint())
	cli := newClient(t, []string{p.Endpoint()})
	putInstance(t, writer, "user", addr(1), registry.Metadata{})
	putInstance(t, writer, "user", addr(2), registry.Metadata{})
	log := newEvents()
	b, err := NewBuilder(cli, WithResetGrace(grace), WithEventHandler(log.add))
	if err != nil {
		t.Fatal(err)
	}
	cc := newFakeCC()
	build(t, b, "user", cc)
	cc.waitAddrs(t, 10*time.Second, addr(1), addr(2))
	return c, writer, p, log, cc
}
