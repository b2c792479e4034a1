package discovery_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/lodestar-rpc/lodestar/registry"
)

// benchMetadata is the metadata every benchmark instance carries: what a
// real registrar would write. etcd's naming resolver parses it and ignores
// it; lodestar keeps it on the endpoint.
func benchMetadata(i int) registry.Metadata {
	zones := [...]string{"eu-west-1a", "eu-west-1b", "eu-west-1c"}
	return registry.Metadata{
		Version: "v1.42.3",
		Region:  "eu-west",
		Zone:    zones[i%len(zones)],
		Weight:  registry.DefaultWeight,
		Status:  registry.StatusServing,
		Labels:  map[string]string{"track": "stable", "pool": "general"},
	}
}

// instanceKV returns the key and value a registrar writes for addr.
func instanceKV(tb testing.TB, service, addr string, i int) (key, value string) {
	tb.Helper()
	v, err := registry.Encode(addr, benchMetadata(i))
	if err != nil {
		tb.Fatal(err)
	}
	return registry.Key(registry.DefaultPrefix, service, addr), string(v)
}

// putTxnBatches writes kvs in transactions of at most 128 operations
// (etcd's default --max-txn-ops).
func putTxnBatches(tb testing.TB, cli *clientv3.Client, kvs [][2]string) {
	tb.Helper()
	const maxOps = 128
	for i := 0; i < len(kvs); i += maxOps {
		chunk := kvs[i:min(i+maxOps, len(kvs))]
		ops := make([]clientv3.Op, len(chunk))
		for j, kv := range chunk {
			ops[j] = clientv3.OpPut(kv[0], kv[1])
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// ---- raw watch: the floor ----

type floorKey struct {
	typ mvccpb.Event_EventType
	key string
}

// floorWatch is a plain clientv3 Watch on a prefix, on its own client. It
// records when each event reached it: the earliest any etcd watcher can
// know of a change.
type floorWatch struct {
	mu     sync.Mutex
	seen   map[floorKey]time.Time
	signal chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// startFloor starts the watch and returns once etcd has confirmed it. The
// watch stops at cleanup.
func startFloor(tb testing.TB, cli *clientv3.Client, prefix string) *floorWatch {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &floorWatch{
		seen:   make(map[floorKey]time.Time),
		signal: make(chan struct{}, 1),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	wch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	select {
	case resp, ok := <-wch:
		if !ok || !resp.Created || resp.Err() != nil {
			cancel()
			tb.Fatalf("floor watch on %s did not start: %v", prefix, resp.Err())
		}
	case <-time.After(10 * time.Second):
		cancel()
		tb.Fatalf("floor watch on %s: no created notification", prefix)
	}
	go func() {
		defer close(f.done)
		for {
			select {
			case <-ctx.Done():
				return
			case resp, ok := <-wch:
				if !ok {
					return
				}
				now := time.Now()
				f.mu.Lock()
				for _, ev := range resp.Events {
					k := floorKey{ev.Type, string(ev.Kv.Key)}
					if _, ok := f.seen[k]; !ok {
						f.seen[k] = now
					}
				}
				f.mu.Unlock()
				select {
				case f.signal <- struct{}{}:
				default:
				}
			}
		}
	}()
	tb.Cleanup(func() {
		cancel()
		<-f.done
	})
	return f
}

// forget drops what was recorded for key, before it is written again.
func (f *floorWatch) forget(key string) {
	f.mu.Lock()
	delete(f.seen, floorKey{mvccpb.PUT, key})
	delete(f.seen, floorKey{mvccpb.DELETE, key})
	f.mu.Unlock()
}

// lookup returns when the event arrived, or the zero time.
func (f *floorWatch) lookup(typ mvccpb.Event_EventType, key string) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[floorKey{typ, key}]
}

// wait returns when the event arrived, waiting for it up to timeout.
func (f *floorWatch) wait(tb testing.TB, typ mvccpb.Event_EventType, key string, timeout time.Duration) time.Time {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if at := f.lookup(typ, key); !at.IsZero() {
			return at
		}
		select {
		case <-f.signal:
		case <-deadline.C:
			tb.Fatalf("floor watch: no %s event for %s within %s", typ, key, timeout)
		}
	}
}

// stampWatcher wraps a client's Watcher and records when each event left
// it, before the resolver using that client sees it: a resolver's own
// delivery time is its update's time minus this, free of the jitter
// between two clients' watch streams that a comparison with the floor
// watch carries. Each Watch gets one forwarding goroutine, which ends when
// the wrapped channel closes (its context ends, or the client closes).
type stampWatcher struct {
	clientv3.Watcher
	mu sync.Mutex
	at map[floorKey]time.Time
}

// stampWatches installs a stampWatcher on cli; cli's Watch calls made
// afterwards go through it.
func stampWatches(cli *clientv3.Client) *stampWatcher {
	w := &stampWatcher{Watcher: cli.Watcher, at: make(map[floorKey]time.Time)}
	cli.Watcher = w
	return w
}

func (w *stampWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	in := w.Watcher.Watch(ctx, key, opts...)
	out := make(chan clientv3.WatchResponse)
	go func() {
		defer close(out)
		for resp := range in {
			now := time.Now()
			w.mu.Lock()
			for _, ev := range resp.Events {
				w.at[floorKey{ev.Type, string(ev.Kv.Key)}] = now
			}
			w.mu.Unlock()
			select {
			case out <- resp:
			case <-ctx.Done():
			}
		}
	}()
	return out
}

// stamp returns when the event last left the watcher, or the zero time.
func (w *stampWatcher) stamp(typ mvccpb.Event_EventType, key string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.at[floorKey{typ, key}]
}

// ---- calls through a real grpc.ClientConn ----

// callTracker records, per backend address, when the first and the last
// successful call to it were started (picked). The address comes from
// grpc.Peer, so calls of several connections to one server are told
// apart.
type callTracker struct {
	mu      sync.Mutex
	first   map[string]time.Time
	last    map[string]time.Time
	changed chan struct{} // 1-slot: a call was noted
	ok      atomic.Int64
	failed  atomic.Int64
	lastErr atomic.Value
}

func (c *callTracker) note(addr string, at time.Time) {
	c.mu.Lock()
	if _, ok := c.first[addr]; !ok {
		c.first[addr] = at
	}
	if at.After(c.last[addr]) {
		c.last[addr] = at
	}
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// waitCalls waits until cond holds, re-checking it whenever one of the
// trackers notes a call, or at the latest every recheck (for conditions
// that turn true as time passes, such as "no call for 200 ms"). It
// reports whether cond held before the deadline.
func waitCalls(deadline time.Time, recheck time.Duration, cond func() bool, trs ...*callTracker) bool {
	for !cond() {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		t := time.NewTimer(min(left, recheck))
		select {
		case <-trs[0].changed:
		case <-trs[len(trs)-1].changed:
		case <-t.C:
		}
		t.Stop()
	}
	return true
}

// window waits for d: a measurement window (a settle period before or
// after a measured change), never a stand-in for waiting on an event.
func window(d time.Duration) { <-time.After(d) }

// reset forgets addr, before a new server (which may reuse a port) is
// registered at it.
func (c *callTracker) reset(addr string) {
	c.mu.Lock()
	delete(c.first, addr)
	delete(c.last, addr)
	c.mu.Unlock()
}

func (c *callTracker) times(addr string) (first, last time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first[addr], c.last[addr]
}

// startCallers runs workers goroutines that each make health Check calls
// on conn back to back, pausing between calls, until cleanup.
func startCallers(tb testing.TB, conn *grpc.ClientConn, workers int, pause time.Duration) *callTracker {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &callTracker{first: make(map[string]time.Time), last: make(map[string]time.Time), changed: make(chan struct{}, 1)}
	hc := healthpb.NewHealthClient(conn)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				var p peer.Peer
				start := time.Now()
				cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
				ccancel()
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					tr.failed.Add(1)
					tr.lastErr.Store(err.Error())
				} else {
					tr.ok.Add(1)
					if p.Addr != nil {
						tr.note(p.Addr.String(), start)
					}
				}
				// Pacing: the load's shape, stopped at once by cleanup.
				t := time.NewTimer(pause)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
			}
		})
	}
	tb.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return tr
}

// ---- a recording resolver.ClientConn ----

// recCC stands in for grpc's ClientConn under a resolver: it keeps the last
// state (as grpc would) and the time of the first update, since the last
// expect, that satisfies a predicate. The time is taken on entry, before
// the predicate runs.
type recCC struct {
	mu      sync.Mutex
	pred    func(resolver.State) bool
	hit     time.Time
	updates int
	last    resolver.State
	errs    []error
	signal  chan struct{}
}

var _ resolver.ClientConn = (*recCC)(nil)

func newRecCC() *recCC { return &recCC{signal: make(chan struct{}, 1)} }

func (c *recCC) UpdateState(s resolver.State) error {
	now := time.Now()
	c.mu.Lock()
	c.updates++
	c.last = s
	if c.pred != nil && c.hit.IsZero() && c.pred(s) {
		c.hit = now
	}
	c.mu.Unlock()
	c.notify()
	return nil
}

func (c *recCC) ReportError(err error) {
	c.mu.Lock()
	c.errs = append(c.errs, err)
	c.mu.Unlock()
	c.notify()
}

func (c *recCC) notify() {
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

func (c *recCC) NewAddress([]resolver.Address) {}

func (c *recCC) ParseServiceConfig(string) *serviceconfig.ParseResult { return nil }

// count returns how many updates arrived so far.
func (c *recCC) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.updates
}

// expect arms pred; call it before the action whose update is awaited.
func (c *recCC) expect(pred func(resolver.State) bool) {
	c.mu.Lock()
	c.pred, c.hit = pred, time.Time{}
	c.mu.Unlock()
}

// wait returns when the first update satisfying the armed predicate
// arrived, waiting up to timeout.
func (c *recCC) wait(tb testing.TB, timeout time.Duration) time.Time {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		hit, n, errs := c.hit, len(c.last.Endpoints), fmt.Sprint(c.errs)
		c.mu.Unlock()
		if !hit.IsZero() {
			return hit
		}
		select {
		case <-c.signal:
		case <-deadline.C:
			tb.Fatalf("resolver: no matching update within %s (last state has %d endpoints; errors %s)", timeout, n, errs)
		}
	}
}

func hasAddr(s resolver.State, addr string) bool {
	for _, ep := range s.Endpoints {
		for _, a := range ep.Addresses {
			if a.Addr == addr {
				return true
			}
		}
	}
	return false
}

// ---- figures ----

// pct returns the p-th quantile (0 < p <= 1) of ds by nearest rank.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// ratio formats a/b as "1.23x", or "n/a" when b is not positive.
func ratio(a, b float64) string {
	if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// sizeStr formats a byte count.
func sizeStr(n float64) string {
	switch a := math.Abs(n); {
	case a >= 1<<20:
		return fmt.Sprintf("%.2f MiB", n/(1<<20))
	case a >= 1<<10:
		return fmt.Sprintf("%.1f KiB", n/(1<<10))
	default:
		return fmt.Sprintf("%.0f B", n)
	}
}

// singleRun runs f exactly once per benchmark run, whatever b.N or
// -benchtime: the measurements are trials inside f, not b.N iterations.
// The framework's ns/op is suppressed.
func singleRun(b *testing.B, f func()) {
	ran := false
	for b.Loop() {
		if ran {
			continue
		}
		ran = true
		f()
	}
	b.ReportMetric(0, "ns/op")
}

// printTable writes a benchmark's table to stdout: b.Log would keep only
// its first 10 lines.
func printTable(b *testing.B, table string) {
	fmt.Printf("--- %s\n%s\n", b.Name(), table)
}
