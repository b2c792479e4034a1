package discovery_test

import (
	"fmt"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/resolver"

	"github.com/lodestar-rpc/lodestar/discovery"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
)

// listEvents records a resolver's events for the list benchmarks.
type listEvents struct {
	mu     sync.Mutex
	all    []discovery.Event
	signal chan struct{}
}

func (l *listEvents) add(ev discovery.Event) {
	l.mu.Lock()
	l.all = append(l.all, ev)
	l.mu.Unlock()
	select {
	case l.signal <- struct{}{}:
	default:
	}
}

// waitListed waits for the n-th EventListed and returns it with the event
// just before it.
func (l *listEvents) waitListed(tb testing.TB, n int, timeout time.Duration) (before, listed discovery.Event) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		seen := 0
		for i, ev := range l.all {
			if ev.Kind == discovery.EventListed {
				seen++
				if seen == n {
					listed = ev
					if i > 0 {
						before = l.all[i-1]
					}
				}
			}
		}
		l.mu.Unlock()
		if seen >= n {
			return before, listed
		}
		select {
		case <-l.signal:
		case <-deadline.C:
			tb.Fatalf("list %d not done within %s", n, timeout)
		}
	}
}

func (l *listEvents) count(kind discovery.EventKind) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, ev := range l.all {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// BenchmarkRelistOnReconnect measures what a reconnection to etcd costs a
// resolver of 10,000 instances now that every reconnection re-reads the
// list and checks it against the last one: the time from the reconnection
// noticed to the list done, and the bytes the process allocated meanwhile
// (etcd's own work included, in the same process). Nothing changed in
// etcd, so grpc gets no update.
func BenchmarkRelistOnReconnect(b *testing.B) {
	singleRun(b, func() {
		const n, trials = 10_000, 10
		c := etcdtest.New(b)
		writer := newClient(b, c.Endpoints())
		var kvs [][2]string
		for i := range n {
			k, v := instanceKV(b, "user", fmt.Sprintf("10.%d.%d.%d:8080", i>>16, (i>>8)&255, i&255), i)
			kvs = append(kvs, [2]string{k, v})
		}
		putTxnBatches(b, writer, kvs)
		p := etcdtest.NewProxy(b, c.Member(0).Endpoint())
		cli := newClient(b, []string{p.Endpoint()})
		log := &listEvents{signal: make(chan struct{}, 1)}
		bl, err := discovery.NewBuilder(cli, discovery.WithEventHandler(log.add))
		if err != nil {
			b.Fatal(err)
		}
		cc := newRecCC()
		r, err := bl.Build(resolver.Target{URL: url.URL{Scheme: discovery.Scheme, Path: "/user"}}, cc, resolver.BuildOptions{})
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		log.waitListed(b, 1, time.Minute)
		updates := cc.count()
		var took []time.Duration
		var allocs []float64
		for i := range trials {
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			p.Reset()
			before, listed := log.waitListed(b, i+2, time.Minute)
			runtime.ReadMemStats(&m1)
			if before.Kind != discovery.EventWatchBroken || !strings.Contains(fmt.Sprint(before.Err), "connected to etcd again") {
				b.Fatalf("list %d followed %v, not the reconnection", i+2, before)
			}
			took = append(took, listed.Time.Sub(before.Time))
			allocs = append(allocs, float64(m1.TotalAlloc-m0.TotalAlloc))
		}
		if got := cc.count() - updates; got != 0 {
			b.Errorf("%d updates from lists that found nothing changed", got)
		}
		slices.Sort(took)
		printTable(b, fmt.Sprintf("relist of %d instances on a reconnection, %d trials: p50 %.1f ms, max %.1f ms; allocated (process) median %s",
			n, trials, ms(took[len(took)/2]), ms(took[len(took)-1]), sizeStr(median(allocs))))
	})
}

// BenchmarkColdListMillion lists a service of 1,000,000 keys from a cold
// start, with the default instance limit (100,000 kept, the rest counted)
// and with a limit that keeps them all: the time from Build to the first
// list, the failed lists on the way (a retry storm would show here), and
// the live heap the resolver adds (the process's heap after the list minus
// before Build, both after a GC; etcd's own heap, in the same process,
// is in both). Writing the keys takes minutes; it is skipped with -short.
func BenchmarkColdListMillion(b *testing.B) {
	if testing.Short() {
		b.Skip("1,000,000 keys")
	}
	singleRun(b, func() {
		const n = 1_000_000
		c := etcdtest.New(b)
		writer := newClient(b, c.Endpoints())
		kvs := make([][2]string, 0, 10_000)
		for i := range n {
			k, v := instanceKV(b, "user", fmt.Sprintf("10.%d.%d.%d:8080", i>>16, (i>>8)&255, i&255), i)
			kvs = append(kvs, [2]string{k, v})
			if len(kvs) == cap(kvs) {
				putTxnBatches(b, writer, kvs)
				kvs = kvs[:0]
			}
		}
		putTxnBatches(b, writer, kvs)
		kvs = nil
		var rows []string
		for _, limit := range []int{discovery.DefaultMaxInstances, n} {
			cli := newClient(b, c.Endpoints())
			log := &listEvents{signal: make(chan struct{}, 1)}
			bl, err := discovery.NewBuilder(cli, discovery.WithEventHandler(log.add), discovery.WithMaxInstances(limit))
			if err != nil {
				b.Fatal(err)
			}
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			start := time.Now()
			cc := newRecCC()
			r, err := bl.Build(resolver.Target{URL: url.URL{Scheme: discovery.Scheme, Path: "/user"}}, cc, resolver.BuildOptions{})
			if err != nil {
				b.Fatal(err)
			}
			_, listed := log.waitListed(b, 1, 10*time.Minute)
			took := listed.Time.Sub(start)
			runtime.GC()
			runtime.ReadMemStats(&m1)
			cc.mu.Lock()
			kept := len(cc.last.Endpoints)
			cc.mu.Unlock()
			rows = append(rows, fmt.Sprintf("| %d | %d | %.2f s | %d | %s |", limit, kept, took.Seconds(),
				log.count(discovery.EventListFailed), sizeStr(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)))))
			r.Close()
		}
		printTable(b, "cold list of 1,000,000 keys\n| limit | kept | Build → list | failed lists | heap added |\n|---|---|---|---|---|\n"+strings.Join(rows, "\n"))
	})
}
