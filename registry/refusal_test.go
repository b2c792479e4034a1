package registry_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/registry"
)

// enableAuth turns etcd's auth on with a root user and a user "reg" that
// may write only the instances of service "user"; it returns a root
// client.
func enableAuth(t *testing.T, c *etcdtest.Cluster) *clientv3.Client {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	admin := c.Client(t)
	prefix := registry.ServicePrefix(registry.DefaultPrefix, "user")
	for _, step := range []func() error{
		func() error { _, err := admin.RoleAdd(ctx, "root"); return err },
		func() error { _, err := admin.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "reg-user"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "reg-user", prefix, clientv3.GetPrefixRangeEnd(prefix),
				clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "reg", "regpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "reg", "reg-user"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("etcd auth setup: %v", err)
		}
	}
	return authClient(t, c.Endpoints(), "root", "rootpw")
}

func authClient(t *testing.T, endpoints []string, user, password string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, Username: user, Password: password,
		DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client for %s: %v", user, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestRefusedServiceDoesNotBlockOthers: a registrar for two services, one
// of which its etcd role may not write. The refused instance is reported
// by key and kept pending; every other Register, SetWeight and Drain goes
// through, and Deregistering the refused one, never written, returns at
// once and leaves the registrar registered.
func TestRefusedServiceDoesNotBlockOthers(t *testing.T) {
	c := etcdtest.New(t)
	root := enableAuth(t, c)
	rec := newRecorder()
	r := newRegistrar(t, authClient(t, c.Endpoints(), "reg", "regpw"), rec)

	// "order" sorts before "user": before the fix both went in one
	// transaction, which etcd refused whole, again and again.
	forbidden := registry.Instance{Service: "order", Addr: "127.0.0.1:7001"}
	fkey := registry.Key(registry.DefaultPrefix, forbidden.Service, forbidden.Addr)
	_, err := r.Register(ctxT(t, 2*time.Second), forbidden)
	var pe *registry.PendingError
	if !errors.As(err, &pe) || pe.Key != fkey || !strings.Contains(err.Error(), "permission denied") ||
		!strings.Contains(err.Error(), "put "+fkey) {
		t.Fatalf("register without permission: %v; want a PendingError naming the put of %s and permission denied", err, fkey)
	}
	rec.until(t, 0, 10*time.Second, "a retry naming "+fkey, func(ev registry.Event) bool {
		return ev.Kind == registry.EventRetrying && ev.Key == fkey && strings.Contains(ev.Err.Error(), "permission denied")
	})

	ins := instances(3)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(ins))
	for _, in := range ins {
		wg.Go(func() {
			ctx := ctxT(t, 30*time.Second)
			if _, err := r.Register(ctx, in); err != nil {
				errs <- fmt.Errorf("register %s: %w", in.Addr, err)
				return
			}
			if err := r.SetWeight(ctx, in.Service, in.Addr, 7); err != nil {
				errs <- fmt.Errorf("set weight of %s: %w", in.Addr, err)
				return
			}
			if err := r.Drain(ctx, in.Service, in.Addr); err != nil {
				errs <- fmt.Errorf("drain %s: %w", in.Addr, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("3 registrations, weights and drains beside a refused instance: %s", time.Since(start).Round(time.Millisecond))
	for _, in := range ins {
		kv := mustGet(t, root, registry.Key(registry.DefaultPrefix, in.Service, in.Addr))
		if kv == nil {
			t.Fatalf("%s missing from etcd", in.Addr)
		}
		if _, md, err := registry.Decode(kv.Value); err != nil || md.Weight != 7 || md.Status != registry.StatusDraining {
			t.Errorf("%s in etcd: %s, %v; want weight 7, draining", in.Addr, kv.Value, err)
		}
	}

	from := len(rec.snapshot())
	if err := r.Deregister(ctxT(t, 10*time.Second), forbidden.Service, forbidden.Addr); err != nil {
		t.Fatalf("deregister the refused instance: %v", err)
	}
	// Registered, or re-registered if the lease was lost meanwhile (a
	// loaded machine can hold back its keepalives): every instance is in
	// etcd under the registrar's lease either way.
	ev, _ := rec.nextOf(t, from, 30*time.Second, registry.EventRegistered, registry.EventReregistered)
	if ev.Instances != len(ins) || r.State() != registry.StateRegistered {
		t.Errorf("after deregistering the refused instance: %v, state %s; want %d instances registered", ev, r.State(), len(ins))
	}
}

// TestDeregisterRefusedInstanceAfterUnansweredWrite: a write of an
// instance etcd will refuse goes unanswered first (the link is paused), so
// it might have landed; once etcd refuses it and its delete alike,
// Deregister gives the delete up (a key of ours could only be under our
// lease, which Close revokes) instead of waiting for good.
func TestDeregisterRefusedInstanceAfterUnansweredWrite(t *testing.T) {
	c := etcdtest.New(t)
	enableAuth(t, c)
	p := etcdtest.NewProxy(t, c.Endpoints()[0])
	rec := newRecorder()
	r := newRegistrar(t, authClient(t, []string{p.Endpoint()}, "reg", "regpw"), rec)
	registerAll(t, r, instances(1))

	forbidden := registry.Instance{Service: "order", Addr: "127.0.0.1:7001"}
	fkey := registry.Key(registry.DefaultPrefix, forbidden.Service, forbidden.Addr)
	p.Pause()
	from := len(rec.snapshot())
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // kept and written in the background
	if _, err := r.Register(ctx, forbidden); err == nil {
		t.Fatal("registered with etcd out of reach")
	}
	_, from = rec.until(t, from, 30*time.Second, "a put of "+fkey+" unanswered", func(ev registry.Event) bool {
		return ev.Kind == registry.EventRetrying && ev.Err != nil && strings.Contains(ev.Err.Error(), "put "+fkey+": no answer")
	})
	p.Resume()
	rec.until(t, from, 30*time.Second, "the put of "+fkey+" refused", func(ev registry.Event) bool {
		return ev.Kind == registry.EventRetrying && ev.Key == fkey && strings.Contains(ev.Err.Error(), "permission denied")
	})
	if err := r.Deregister(ctxT(t, 30*time.Second), forbidden.Service, forbidden.Addr); err != nil {
		t.Fatalf("deregister an instance etcd refused, after a write of unknown outcome: %v", err)
	}
}

// TestLargeValuesAllLand: 64 instances of 40 KiB each, pending together,
// are over etcd's request limit in one write (2.6 MiB against 1.5 MiB);
// they are written in batches bounded by bytes, with no write refused.
func TestLargeValuesAllLand(t *testing.T) {
	c := etcdtest.New(t)
	p := etcdtest.NewProxy(t, c.Endpoints()[0])
	cli := newClient(t, []string{p.Endpoint()})
	rec := newRecorder()
	logs := &logRecorder{}
	r := newRegistrar(t, cli, rec, registry.WithLogger(slog.New(logs)))
	ins := instances(64)
	for i := range ins {
		ins[i].Metadata.Labels["blob"] = strings.Repeat(fmt.Sprint(i%10), 40<<10)
	}
	// Held while etcd is out of reach, all 64 are written in one pass.
	p.Pause()
	var wg sync.WaitGroup
	errs := make(chan error, len(ins))
	for _, in := range ins {
		wg.Go(func() {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			var pe *registry.PendingError
			if _, err := r.Register(ctx, in); !errors.As(err, &pe) {
				errs <- fmt.Errorf("register %s with etcd away: %v, want a PendingError", in.Addr, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	from := len(rec.snapshot())
	p.Resume()
	rec.next(t, from, registry.EventRegistered, 60*time.Second)
	for _, ev := range rec.snapshot() {
		if ev.Kind == registry.EventRetrying && strings.Contains(ev.Err.Error(), "put ") {
			t.Errorf("a write was refused or failed: %v", ev)
		}
	}
	for _, msg := range logs.messages() {
		if strings.Contains(msg, "refused") {
			t.Errorf("logged %q: a batch went over etcd's limit", msg)
		}
	}
	resp, err := cli.Get(ctxT(t, 10*time.Second), registry.ServicePrefix(registry.DefaultPrefix, "user"), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != len(ins) {
		t.Fatalf("%d instances in etcd, want %d", len(resp.Kvs), len(ins))
	}
	for _, kv := range resp.Kvs {
		addr, md, err := registry.Decode(kv.Value)
		if err != nil || len(md.Labels["blob"]) != 40<<10 || !strings.HasSuffix(string(kv.Key), addr) {
			t.Errorf("%s: %d-byte blob, %v", kv.Key, len(md.Labels["blob"]), err)
		}
	}
}

// TestOversizedValueRefused: Register and Update refuse a value over
// MaxValueBytes with a short error naming the key, keep nothing of it, and
// the registrar goes on.
func TestOversizedValueRefused(t *testing.T) {
	c := etcdtest.New(t)
	cli := newClient(t, c.Endpoints())
	r := newRegistrar(t, cli, nil)
	big := strings.Repeat("x", 2<<20)
	in := registry.Instance{Service: "user", Addr: "127.0.0.1:7001", Metadata: registry.Metadata{Labels: map[string]string{"big": big}}}
	key := registry.Key(registry.DefaultPrefix, in.Service, in.Addr)
	_, err := r.Register(ctxT(t, 10*time.Second), in)
	if !errors.Is(err, registry.ErrValueTooLarge) || !strings.Contains(err.Error(), key) || len(err.Error()) > 1024 {
		t.Fatalf("register a 2 MiB label: %.300v; want a short ErrValueTooLarge naming %s", err, key)
	}
	t.Log(err)
	if n := len(r.Instances()); n != 0 || r.State() != registry.StateIdle {
		t.Fatalf("after the refused value: %d instances kept, state %s", n, r.State())
	}

	in.Metadata.Labels = map[string]string{"small": "1"}
	registerAll(t, r, []registry.Instance{in})
	before := mustGet(t, cli, key)
	err = r.Update(ctxT(t, 10*time.Second), in.Service, in.Addr, func(m *registry.Metadata) { m.Labels["big"] = big })
	if !errors.Is(err, registry.ErrValueTooLarge) || len(err.Error()) > 1024 {
		t.Fatalf("update to a 2 MiB label: %.300v; want a short ErrValueTooLarge", err)
	}
	if got := r.Instances()[0].Metadata.Labels; len(got) != 1 || got["small"] != "1" {
		t.Errorf("labels kept after the refused update: %d labels", len(got))
	}
	if err := r.SetWeight(ctxT(t, 10*time.Second), in.Service, in.Addr, 9); err != nil {
		t.Fatalf("set weight after the refused update: %v", err)
	}
	after := mustGet(t, cli, key)
	if _, md, err := registry.Decode(after.Value); err != nil || md.Weight != 9 || md.Labels["big"] != "" || after.ModRevision <= before.ModRevision {
		t.Errorf("value after the refused update and a weight: %.200s, %v", after.Value, err)
	}
}

// logRecorder is a slog.Handler keeping every record's message and
// attributes, at every level.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }

func (h *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	h.msgs = append(h.msgs, b.String())
	h.mu.Unlock()
	return nil
}

func (h *logRecorder) messages() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.msgs...)
}
