package discovery_test

// Benchmarks comparing lodestar's resolver with etcd's official naming
// resolver (go.etcd.io/etcd/client/v3/naming/resolver), side by side on one
// embedded etcd, with a plain clientv3 Watch as the floor. They only run
// with -bench; each measures once (trials inside, not b.N iterations) and
// logs a table:
//
//	go test -run '^$' -bench . -benchtime 1x -count 1 -timeout 20m ./discovery

import (
	"context"
	"fmt"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdresolver "go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"

	"github.com/lodestar-rpc/lodestar/discovery"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
	"github.com/lodestar-rpc/lodestar/registry"
)

const (
	benchService = "user"
	// etcd's resolver strips one leading '/' from the path: the keys
	// under "/services/user/" are the target "etcd:////services/user".
	etcdNamingTarget = "etcd:////services/user"
	roundRobin       = `{"loadBalancingConfig":[{"round_robin":{}}]}`
)

var benchPrefix = registry.ServicePrefix(registry.DefaultPrefix, benchService)

func benchDial(tb testing.TB, target string, rb resolver.Builder) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(target, grpc.WithResolvers(rb),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(roundRobin))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

func benchPut(tb testing.TB, cli *clientv3.Client, key, value string) time.Time {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	if _, err := cli.Put(ctx, key, value); err != nil {
		tb.Fatal(err)
	}
	return t0
}

func benchDelete(tb testing.TB, cli *clientv3.Client, key string) time.Time {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	if _, err := cli.Delete(ctx, key); err != nil {
		tb.Fatal(err)
	}
	return t0
}

// BenchmarkPropagation: three live backends, and two grpc connections
// with round_robin calling them continuously (4 callers each, 250 µs pause
// between calls), one resolving through lodestar, one through etcd's naming
// resolver, each on its own etcd client. Each trial registers a fresh
// server with one Put and, once both connections have called it, removes
// it with one Delete. Per trial and per connection it records
//
//	add: Put → start of the first call that reached the new server
//	del: Delete → start of the last call that reached it (the trial ends
//	     when no call of either connection has reached it for 200 ms)
//
// and, for the same Put and Delete, when the event reached a plain
// clientv3 Watch on the prefix (its own client): the floor.
func BenchmarkPropagation(b *testing.B) {
	singleRun(b, func() { benchPropagation(b) })
}

func benchPropagation(b *testing.B) {
	const (
		live    = 3
		workers = 4
		pause   = 250 * time.Microsecond
		warmup  = 3
		trials  = 50
		quiet   = 200 * time.Millisecond
		settle  = 50 * time.Millisecond
		timeout = 10 * time.Second
	)
	c := etcdtest.New(b)
	writer := newClient(b, c.Endpoints())
	cliL := newClient(b, c.Endpoints())
	cliE := newClient(b, c.Endpoints())
	cliW := newClient(b, c.Endpoints())

	backends := testserver.StartN(b, live)
	for i, s := range backends {
		k, v := instanceKV(b, benchService, s.Addr, i)
		benchPut(b, writer, k, v)
	}
	floor := startFloor(b, cliW, benchPrefix)

	lb, err := discovery.NewBuilder(cliL)
	if err != nil {
		b.Fatal(err)
	}
	eb, err := etcdresolver.NewBuilder(cliE)
	if err != nil {
		b.Fatal(err)
	}
	connL := benchDial(b, discovery.Target(benchService), lb)
	connE := benchDial(b, etcdNamingTarget, eb)
	trL := startCallers(b, connL, workers, pause)
	trE := startCallers(b, connE, workers, pause)

	// Both connections reach every live backend before the first trial.
	reachedAll := func() bool {
		for _, s := range backends {
			fl, _ := trL.times(s.Addr)
			fe, _ := trE.times(s.Addr)
			if fl.IsZero() || fe.IsZero() {
				return false
			}
		}
		return true
	}
	if !waitCalls(time.Now().Add(timeout), 50*time.Millisecond, reachedAll, trL, trE) {
		b.Fatalf("connections did not reach all %d backends within %s (lodestar err %v, etcd naming err %v)",
			live, timeout, trL.lastErr.Load(), trE.lastErr.Load())
	}

	var addW, addL, addE, delW, delL, delE []time.Duration
	okL0, okE0 := trL.ok.Load(), trE.ok.Load()
	start := time.Now()
	for i := range warmup + trials {
		s := testserver.Start(b)
		key, value := instanceKV(b, benchService, s.Addr, live+i)
		trL.reset(s.Addr)
		trE.reset(s.Addr)
		floor.forget(key)

		// Put → first call on the new server.
		t0 := benchPut(b, writer, key, value)
		tw := floor.wait(b, mvccpb.PUT, key, timeout)
		var fl, fe time.Time
		called := func() bool {
			fl, _ = trL.times(s.Addr)
			fe, _ = trE.times(s.Addr)
			return !fl.IsZero() && !fe.IsZero()
		}
		if !waitCalls(t0.Add(timeout), 50*time.Millisecond, called, trL, trE) {
			b.Fatalf("trial %d: new server not called within %s (lodestar %v, etcd naming %v)", i, timeout, !fl.IsZero(), !fe.IsZero())
		}
		window(settle)

		// Delete → last call on it.
		t1 := benchDelete(b, writer, key)
		tdw := floor.wait(b, mvccpb.DELETE, key, timeout)
		var ll, le time.Time
		// Done when neither connection has called the server for quiet.
		quietNow := func() bool {
			_, ll = trL.times(s.Addr)
			_, le = trE.times(s.Addr)
			latest := t1
			if ll.After(latest) {
				latest = ll
			}
			if le.After(latest) {
				latest = le
			}
			return time.Since(latest) >= quiet
		}
		if !waitCalls(t1.Add(timeout), quiet/4, quietNow, trL, trE) {
			b.Fatalf("trial %d: deleted server still called %s after the Delete", i, timeout)
		}
		s.Stop()
		if i < warmup {
			continue
		}
		addW, addL, addE = append(addW, tw.Sub(t0)), append(addL, fl.Sub(t0)), append(addE, fe.Sub(t0))
		delW, delL, delE = append(delW, tdw.Sub(t1)), append(delL, ll.Sub(t1)), append(delE, le.Sub(t1))
	}
	elapsed := time.Since(start)

	type row struct {
		name     string
		add, del []time.Duration
	}
	rows := []row{
		{"raw watch (floor)", addW, delW},
		{"lodestar", addL, delL},
		{"etcd naming", addE, delE},
	}
	var t strings.Builder
	fmt.Fprintf(&t, "propagation (ms), %d trials, %d live backends, %d callers/conn, %s pause between calls\n", trials, live, workers, pause)
	fmt.Fprintf(&t, "add = Put→first call on the new server, del = Delete→last call on it (call start times; floor = event at a plain Watch)\n")
	fmt.Fprintf(&t, "%-28s %9s %9s %9s %9s\n", "", "add p50", "add p99", "del p50", "del p99")
	for _, r := range rows {
		fmt.Fprintf(&t, "%-28s %9.2f %9.2f %9.2f %9.2f\n", r.name,
			ms(pct(r.add, .5)), ms(pct(r.add, .99)), ms(pct(r.del, .5)), ms(pct(r.del, .99)))
	}
	ratios := func(name string, a, d row) {
		fmt.Fprintf(&t, "%-28s %9s %9s %9s %9s\n", name,
			ratio(ms(pct(a.add, .5)), ms(pct(d.add, .5))), ratio(ms(pct(a.add, .99)), ms(pct(d.add, .99))),
			ratio(ms(pct(a.del, .5)), ms(pct(d.del, .5))), ratio(ms(pct(a.del, .99)), ms(pct(d.del, .99))))
	}
	ratios("lodestar / etcd naming", rows[1], rows[2])
	ratios("lodestar / floor", rows[1], rows[0])
	ratios("etcd naming / floor", rows[2], rows[0])
	// Paired: each trial's system time minus the same trial's floor time.
	beyond := func(sys, fl []time.Duration) []time.Duration {
		out := make([]time.Duration, len(sys))
		for i := range sys {
			out[i] = sys[i] - fl[i]
		}
		return out
	}
	for _, r := range rows[1:] {
		a, d := beyond(r.add, addW), beyond(r.del, delW)
		fmt.Fprintf(&t, "%-28s %9.2f %9.2f %9.2f %9.2f\n", r.name+" − floor (paired)",
			ms(pct(a, .5)), ms(pct(a, .99)), ms(pct(d, .5)), ms(pct(d, .99)))
	}
	callsL, callsE := trL.ok.Load()-okL0, trE.ok.Load()-okE0
	fmt.Fprintf(&t, "calls during the %d trials (%.1f s): lodestar %d ok, %d failed; etcd naming %d ok, %d failed\n",
		trials+warmup, elapsed.Seconds(), callsL, trL.failed.Load(), callsE, trE.failed.Load())
	fmt.Fprintf(&t, "mean gap between calls to one backend (resolution of add/del): lodestar %.2f ms, etcd naming %.2f ms\n",
		float64(live+1)*ms(elapsed)/float64(callsL), float64(live+1)*ms(elapsed)/float64(callsE))
	printTable(b, t.String())
	if n := trL.failed.Load() + trE.failed.Load(); n > 0 {
		b.Logf("last errors: lodestar %v, etcd naming %v", trL.lastErr.Load(), trE.lastErr.Load())
	}

	for _, r := range []struct {
		name     string
		add, del []time.Duration
	}{{"floor", addW, delW}, {"lodestar", addL, delL}, {"etcd", addE, delE}} {
		b.ReportMetric(ms(pct(r.add, .5)), r.name+"-add-p50-ms")
		b.ReportMetric(ms(pct(r.add, .99)), r.name+"-add-p99-ms")
		b.ReportMetric(ms(pct(r.del, .5)), r.name+"-del-p50-ms")
		b.ReportMetric(ms(pct(r.del, .99)), r.name+"-del-p99-ms")
	}
}

// BenchmarkScale drives each resolver, with N instances registered, under
// a recording resolver.ClientConn (no grpc connection: dialling thousands
// of dead addresses would measure grpc, not the resolver). Per system it
// measures
//
//	build: Build → first update holding all N instances (median of 3)
//	beyond watch: for one Put of an extra instance, the update holding it
//	     minus the time the same Put reached a plain clientv3 Watch on
//	     the prefix (median of 20)
//	own: for the same Put, the update holding it minus the time the
//	     event left the resolver's own etcd client (stampWatcher): the
//	     resolver's own work per change, without the jitter between two
//	     clients' watch streams that "beyond watch" carries (median of 20)
//	     Each Put follows a quiet spell of DefaultUpdateInterval, so
//	     lodestar delivers it at once rather than with a burst.
//	bytes/change: process-wide runtime TotalAlloc around one such Put
//	     (Put to update, plus 5 ms), with that resolver running, minus
//	     the same figure with no resolver running (baseline: the writer,
//	     the embedded etcd server and the floor watch); medians of 20
//	     (the baseline: of 40, before and after), which keeps etcd's
//	     background work (backend commits, ticks) out
//	heap/instance: live heap (after runtime.GC) after the first full list
//	     minus before Build (the resolver's state plus the last state it
//	     pushed, which the recording ClientConn keeps as grpc would),
//	     minus the same for a service of one instance (the fixed cost of
//	     a resolver: its goroutines and watch stream, on the client and
//	     on the in-process etcd server), over N−1; medians of 3. The fixed
//	     cost is printed too.
//
// The two resolvers run one after the other, each alone, on the same etcd
// and the same keys; each has its own etcd client, made beforehand.
func BenchmarkScale(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			singleRun(b, func() { benchScale(b, n) })
		})
	}
}

type scaleSystem struct {
	name  string
	build func(service string, cc resolver.ClientConn) (resolver.Resolver, error)
	stamp *stampWatcher
}

// oneService holds a single instance: a resolver of it costs the fixed
// part of the heap.
const oneService = "one"

type scaleResult struct {
	build   []time.Duration
	heap    []float64 // live heap after the full list, per build
	heap1   []float64 // the same for oneService
	beyond  []time.Duration
	own     []time.Duration // event out of the resolver's client → update
	toUpd   []time.Duration // Put → update
	toWatch []time.Duration // Put → floor watch event
	bytes   []float64       // per change, raw (baseline not subtracted)
	allocs  []float64
	burst   burstResult
}

// burstResult is what a burst of separate registrations cost a resolver.
type burstResult struct {
	puts     int
	putting  time.Duration // first Put sent → last Put acknowledged
	updates  int           // updates grpc got from the first Put until the list held every new instance
	converge time.Duration // last Put acknowledged → the update holding every new instance
	bytes    float64       // allocated process-wide over the same span
}

const (
	scaleBuilds  = 3
	scaleChanges = 20
	scaleSettle  = 5 * time.Millisecond
	scaleTimeout = 30 * time.Second
)

func benchScale(b *testing.B, n int) {
	c := etcdtest.New(b)
	writer := newClient(b, c.Endpoints())
	cliL := newClient(b, c.Endpoints())
	cliE := newClient(b, c.Endpoints())
	cliW := newClient(b, c.Endpoints())

	kvs := make([][2]string, n)
	var valueBytes int
	for i := range kvs {
		k, v := instanceKV(b, benchService, fmt.Sprintf("127.0.0.1:%d", 20000+i), i)
		kvs[i] = [2]string{k, v}
		valueBytes += len(v)
	}
	k1, v1 := instanceKV(b, oneService, "127.0.0.1:19999", 0)
	kvs = append(kvs, [2]string{k1, v1})
	putTxnBatches(b, writer, kvs)
	kvs = nil
	// Let etcd's backend commit the batch (every 100 ms) before anything
	// is measured.
	window(300 * time.Millisecond)
	// Every client connected before anything is measured.
	for _, cli := range []*clientv3.Client{cliL, cliE} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := cli.Get(ctx, benchPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if err != nil {
			b.Fatal(err)
		}
	}
	floor := startFloor(b, cliW, benchPrefix)
	stampL, stampE := stampWatches(cliL), stampWatches(cliE)

	lb, err := discovery.NewBuilder(cliL)
	if err != nil {
		b.Fatal(err)
	}
	eb, err := etcdresolver.NewBuilder(cliE)
	if err != nil {
		b.Fatal(err)
	}
	systems := []scaleSystem{
		{"lodestar", func(service string, cc resolver.ClientConn) (resolver.Resolver, error) {
			return lb.Build(resolver.Target{URL: url.URL{Scheme: discovery.Scheme, Path: "/" + service}}, cc, resolver.BuildOptions{})
		}, stampL},
		{"etcd naming", func(service string, cc resolver.ClientConn) (resolver.Resolver, error) {
			prefix := registry.ServicePrefix(registry.DefaultPrefix, service)
			return eb.Build(resolver.Target{URL: url.URL{Scheme: "etcd", Path: "/" + strings.TrimSuffix(prefix, "/")}}, cc, resolver.BuildOptions{})
		}, stampE},
	}

	extra := 0 // extra instances get fresh addresses
	// The baseline (no resolver running) is measured before and after the
	// two systems, and averaged.
	base0 := scaleChangesRun(b, writer, floor, nil, nil, &extra)
	results := make([]scaleResult, len(systems))
	for i, sys := range systems {
		results[i] = scaleSystemRun(b, sys, n, writer, floor, &extra)
	}
	base1 := scaleChangesRun(b, writer, floor, nil, nil, &extra)
	base := scaleResult{
		toWatch: append(slices.Clone(base0.toWatch), base1.toWatch...),
		bytes:   append(slices.Clone(base0.bytes), base1.bytes...),
		allocs:  append(slices.Clone(base0.allocs), base1.allocs...),
	}
	baseBytes, baseAllocs := median(base.bytes), median(base.allocs)

	var t strings.Builder
	fmt.Fprintf(&t, "scale N=%d (%.0f B per value, realistic metadata); build: median of %d; upd/watch/beyond: medians of %d Puts\n",
		n, float64(valueBytes)/float64(n), scaleBuilds, scaleChanges)
	fmt.Fprintf(&t, "upd = Put→resolver update holding it, watch = Put→event at a plain Watch, beyond = upd − watch per Put;\n")
	fmt.Fprintf(&t, "own = event out of the resolver's own etcd client→update (the resolver's work, without the two clients' jitter);\n")
	fmt.Fprintf(&t, "bytes/allocs per change: process-wide, minus the no-resolver baseline; heap/inst: live heap after the full list minus a one-instance resolver's, over N−1\n")
	fmt.Fprintf(&t, "%-24s %10s %10s %10s %10s %10s %12s %10s %12s\n", "", "build ms", "own µs", "beyond µs", "upd µs", "watch µs", "bytes/chg", "allocs/chg", "heap/inst")
	fmt.Fprintf(&t, "%-24s %10s %10s %10s %10s %10.0f %12s %10.0f %12s\n", "raw watch (baseline)", "-", "-", "-", "-",
		us(pct(base.toWatch, .5)), sizeStr(baseBytes), baseAllocs, "-")
	for i, sys := range systems {
		r := results[i]
		fmt.Fprintf(&t, "%-24s %10.1f %10.0f %10.0f %10.0f %10.0f %12s %10.0f %12s\n", sys.name,
			ms(pct(r.build, .5)), us(pct(r.own, .5)), us(pct(r.beyond, .5)), us(pct(r.toUpd, .5)), us(pct(r.toWatch, .5)),
			sizeStr(median(r.bytes)-baseBytes), median(r.allocs)-baseAllocs, sizeStr(r.heapPerInstance(n)))
	}
	l, e := results[0], results[1]
	fmt.Fprintf(&t, "%-24s %10s %10s %10s %10s %10s %12s %10s %12s\n", "lodestar / etcd naming",
		ratio(ms(pct(l.build, .5)), ms(pct(e.build, .5))),
		ratio(us(pct(l.own, .5)), us(pct(e.own, .5))),
		ratio(us(pct(l.beyond, .5)), us(pct(e.beyond, .5))),
		ratio(us(pct(l.toUpd, .5)), us(pct(e.toUpd, .5))), "",
		ratio(median(l.bytes)-baseBytes, median(e.bytes)-baseBytes),
		ratio(median(l.allocs)-baseAllocs, median(e.allocs)-baseAllocs),
		ratio(l.heapPerInstance(n), e.heapPerInstance(n)))
	fmt.Fprintf(&t, "fixed heap of a resolver (one instance; client and in-process server): lodestar %s, etcd naming %s; all-in heap over N: lodestar %s, etcd naming %s\n",
		sizeStr(median(l.heap1)), sizeStr(median(e.heap1)), sizeStr(median(l.heap)/float64(n)), sizeStr(median(e.heap)/float64(n)))
	fmt.Fprintf(&t, "baseline bytes/change before, after: %s, %s (means %s, %s); builds (ms): lodestar %s; etcd naming %s\n",
		sizeStr(median(base0.bytes)), sizeStr(median(base1.bytes)), sizeStr(mean(base0.bytes)), sizeStr(mean(base1.bytes)),
		msList(l.build), msList(e.build))
	fmt.Fprintf(&t, "raw bytes/change (baseline included), median / mean: lodestar %s / %s; etcd naming %s / %s\n",
		sizeStr(median(l.bytes)), sizeStr(mean(l.bytes)), sizeStr(median(e.bytes)), sizeStr(mean(e.bytes)))
	fmt.Fprintf(&t, "p90 (µs): own: lodestar %.0f, etcd naming %.0f; beyond watch: lodestar %.0f, etcd naming %.0f\n",
		us(pct(l.own, .9)), us(pct(e.own, .9)), us(pct(l.beyond, .9)), us(pct(e.beyond, .9)))
	fmt.Fprintf(&t, "burst: %d registrations, one Put each from one writer (a rolling restart's pace, only faster); updates = until the list held all,\n", burstPuts)
	fmt.Fprintf(&t, "converge = last Put acknowledged → that update, allocated = process-wide over the burst (etcd's own work included)\n")
	for i, sys := range systems {
		r := results[i].burst
		fmt.Fprintf(&t, "  %-12s puts took %6.1f ms; %4d updates; converge %7.2f ms; allocated %s\n",
			sys.name, ms(r.putting), r.updates, ms(r.converge), sizeStr(r.bytes))
	}
	printTable(b, t.String())

	for i, name := range []string{"lodestar", "etcd"} {
		r := results[i]
		b.ReportMetric(ms(pct(r.build, .5)), name+"-build-ms")
		b.ReportMetric(us(pct(r.beyond, .5)), name+"-beyond-watch-us")
		b.ReportMetric(us(pct(r.own, .5)), name+"-own-us")
		b.ReportMetric(median(r.bytes)-baseBytes, name+"-B/change")
		b.ReportMetric(r.heapPerInstance(n), name+"-heap-B/inst")
	}
}

// scaleSystemRun builds the resolver scaleBuilds times (closing all but
// the last), then runs the changes through the last one.
func scaleSystemRun(b *testing.B, sys scaleSystem, n int, writer *clientv3.Client, floor *floorWatch, extra *int) scaleResult {
	var res scaleResult
	// The fixed cost first: a resolver of a one-instance service, after
	// one unmeasured build (first uses allocate what later ones share).
	for i := range scaleBuilds + 1 {
		r, _, _, heap := scaleBuild(b, sys, oneService, 1, i)
		r.Close()
		if i > 0 {
			res.heap1 = append(res.heap1, heap)
		}
	}
	var r resolver.Resolver
	var cc *recCC
	defer func() {
		if r != nil {
			r.Close()
		}
	}()
	for i := range scaleBuilds {
		if r != nil {
			r.Close()
			r, cc = nil, nil
		}
		var took time.Duration
		var heap float64
		r, cc, took, heap = scaleBuild(b, sys, benchService, n, i)
		res.build = append(res.build, took)
		res.heap = append(res.heap, heap)
	}
	res.burst = scaleBurst(b, writer, cc, n, extra)
	ch := scaleChangesRun(b, writer, floor, cc, sys.stamp, extra)
	res.beyond, res.own, res.toUpd, res.toWatch, res.bytes, res.allocs = ch.beyond, ch.own, ch.toUpd, ch.toWatch, ch.bytes, ch.allocs
	return res
}

// scaleBuild builds a resolver of service, which has n instances, and
// returns it, its recording ClientConn, the time to the first update
// holding all n, and the live heap it added.
func scaleBuild(b *testing.B, sys scaleSystem, service string, n, i int) (resolver.Resolver, *recCC, time.Duration, float64) {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m0)
	cc := newRecCC()
	cc.expect(func(s resolver.State) bool { return len(s.Endpoints) >= n })
	t0 := time.Now()
	r, err := sys.build(service, cc)
	if err != nil {
		b.Fatalf("%s: build %d of %s: %v", sys.name, i, service, err)
	}
	took := cc.wait(b, scaleTimeout).Sub(t0)
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m1)
	return r, cc, took, float64(m1.HeapAlloc) - float64(m0.HeapAlloc)
}

// heapPerInstance is the live heap a resolver adds per instance beyond
// its fixed cost.
func (r scaleResult) heapPerInstance(n int) float64 {
	return (median(r.heap) - median(r.heap1)) / float64(n-1)
}

// burstPuts is how many registrations a burst makes, one Put each.
const burstPuts = 200

// scaleBurst registers burstPuts extra instances, one Put after another
// from one writer, as a rolling restart's registrations arrive: each its
// own etcd event. It records how many updates the resolver gave grpc until
// its list held all of them, and how long after the last Put that was;
// then it removes them again (two transactions, unmeasured).
func scaleBurst(b *testing.B, writer *clientv3.Client, cc *recCC, n int, extra *int) burstResult {
	keys := make([]string, burstPuts)
	values := make([]string, burstPuts)
	for i := range keys {
		keys[i], values[i] = instanceKV(b, benchService, fmt.Sprintf("127.0.0.1:%d", 40000+*extra), *extra)
		*extra++
	}
	window(2 * discovery.DefaultUpdateInterval) // a quiet spell first
	cc.expect(func(s resolver.State) bool { return len(s.Endpoints) == n+burstPuts })
	before := cc.count()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	t0 := time.Now()
	for i := range keys {
		benchPut(b, writer, keys[i], values[i])
	}
	tPut := time.Now()
	tAll := cc.wait(b, scaleTimeout)
	res := burstResult{puts: burstPuts, putting: tPut.Sub(t0), updates: cc.count() - before, converge: max(0, tAll.Sub(tPut))}
	runtime.ReadMemStats(&m1)
	res.bytes = float64(m1.TotalAlloc - m0.TotalAlloc)

	cc.expect(func(s resolver.State) bool { return len(s.Endpoints) == n })
	for start := 0; start < len(keys); start += 100 { // etcd takes at most 128 operations per transaction
		var ops []clientv3.Op
		for _, k := range keys[start:min(start+100, len(keys))] {
			ops = append(ops, clientv3.OpDelete(k))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := writer.Txn(ctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			b.Fatal(err)
		}
	}
	cc.wait(b, scaleTimeout)
	window(2 * discovery.DefaultUpdateInterval)
	return res
}

// scaleChangesRun puts scaleChanges extra instances, one at a time, each
// removed again (unmeasured) before the next. With cc nil it measures the
// baseline: Put to the floor watch event only.
func scaleChangesRun(b *testing.B, writer *clientv3.Client, floor *floorWatch, cc *recCC, stamp *stampWatcher, extra *int) scaleResult {
	var res scaleResult
	for range scaleChanges {
		addr := fmt.Sprintf("127.0.0.1:%d", 40000+*extra)
		key, value := instanceKV(b, benchService, addr, *extra)
		*extra++
		if cc != nil {
			cc.expect(func(s resolver.State) bool { return hasAddr(s, addr) })
		}
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		t0 := benchPut(b, writer, key, value)
		tw := floor.wait(b, mvccpb.PUT, key, scaleTimeout)
		var tu time.Time
		if cc != nil {
			tu = cc.wait(b, scaleTimeout)
		}
		window(scaleSettle)
		runtime.ReadMemStats(&m1)
		res.bytes = append(res.bytes, float64(m1.TotalAlloc-m0.TotalAlloc))
		res.allocs = append(res.allocs, float64(m1.Mallocs-m0.Mallocs))
		res.toWatch = append(res.toWatch, tw.Sub(t0))
		if cc != nil {
			res.toUpd = append(res.toUpd, tu.Sub(t0))
			res.beyond = append(res.beyond, tu.Sub(tw))
			res.own = append(res.own, tu.Sub(stamp.stamp(mvccpb.PUT, key)))
			cc.expect(func(s resolver.State) bool { return !hasAddr(s, addr) })
		}
		benchDelete(b, writer, key)
		floor.wait(b, mvccpb.DELETE, key, scaleTimeout)
		if cc != nil {
			cc.wait(b, scaleTimeout)
		}
		// A quiet spell before the next Put, which lodestar would
		// otherwise hold back as part of a burst (WithUpdateInterval).
		window(discovery.DefaultUpdateInterval)
	}
	return res
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

func msList(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%.1f", ms(d))
	}
	return strings.Join(parts, ", ")
}
