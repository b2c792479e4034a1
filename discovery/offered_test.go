package discovery

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"google.golang.org/grpc/resolver"

	"github.com/lodestar-rpc/lodestar/registry"
)

// pushRecorder keeps every list pushed, and a copy of each made when it was
// pushed, to tell whether a list was modified after grpc got it.
type pushRecorder struct {
	fakeCC
	pushed [][]resolver.Endpoint
	copies [][]resolver.Endpoint
}

func (p *pushRecorder) UpdateState(s resolver.State) error {
	p.pushed = append(p.pushed, s.Endpoints)
	p.copies = append(p.copies, slices.Clone(s.Endpoints))
	return nil
}

// expectedList is the list push must give, computed from scratch: every
// entry that is not draining and that the filter keeps, by address then id;
// if none, every entry the filter keeps.
func expectedList(r *etcdResolver) []resolver.Endpoint {
	var offered, all []resolver.Endpoint
	for _, e := range slices.SortedFunc(func(yield func(*entry) bool) {
		for _, e := range r.entries {
			if !yield(e) {
				return
			}
		}
	}, compareEntries) {
		if r.b.opts.filter != nil && !r.b.opts.filter(e.attr.inst) {
			continue
		}
		all = append(all, e.ep)
		if !e.draining {
			offered = append(offered, e.ep)
		}
	}
	if len(offered) == 0 {
		return all
	}
	return offered
}

func sameEndpoints(a, b []resolver.Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y resolver.Endpoint) bool {
		return len(x.Addresses) == 1 && len(y.Addresses) == 1 && &x.Addresses[0] == &y.Addresses[0] && x.Attributes == y.Attributes
	})
}

// TestIncrementalListMatchesRebuild drives the resolver's list with random
// batches of registrations, deregistrations, address changes (several ids
// share addresses), metadata changes, drains and filtered instances, and
// checks after every push that the list merged from the last one equals
// the list built from scratch, and that no list grpc was given changed
// afterwards. The large case crosses spareMin, so the prepared memory is
// used too, and at one point drains every instance of a fully serving
// list and changes it further while all are draining (the list of draining
// instances offered then must not reuse memory grpc holds); the small one
// drains every instance at random times.
func TestIncrementalListMatchesRebuild(t *testing.T) {
	for _, tc := range []struct {
		name    string
		keys    int
		addrs   int
		batches int
		drainAt int // from this batch: undrain every instance, drain every one, add two draining, undrain; -1 for none
	}{
		{"large", 3000, 1500, 300, 150},
		{"small", 6, 3, 400, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, uint64(tc.keys)))
			cc := &pushRecorder{}
			opts := defaultOptions()
			// The merge falls back to a rebuild, logged as an error, if
			// its bookkeeping is wrong: that must never happen.
			var logged strings.Builder
			opts.logger = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelError}))
			t.Cleanup(func() {
				if logged.Len() > 0 {
					t.Errorf("the resolver logged errors:\n%s", logged.String())
				}
			})
			opts.filter = func(in registry.Instance) bool { return in.Metadata.Zone != "hidden" }
			r := &etcdResolver{b: &Builder{opts: opts}, cc: cc, service: "user", prefix: registry.ServicePrefix(opts.prefix, "user"),
				entries: map[string]*entry{}, strs: map[string]string{}, labelSets: map[string]map[string]string{}}
			key := func(i int) string { return registry.Key(opts.prefix, "user", fmt.Sprintf("i%05d", i)) }
			put := func() {
				md := registry.Metadata{Weight: 1 + rng.IntN(3), Status: registry.StatusServing, Zone: "a"}
				switch rng.IntN(8) {
				case 0, 1:
					md.Status = registry.StatusDraining
				case 2:
					md.Zone = "hidden"
				}
				v, err := registry.Encode(addr(rng.IntN(tc.addrs)), md)
				if err != nil {
					t.Fatal(err)
				}
				r.put(key(rng.IntN(tc.keys)), v, 1, true)
			}
			// Start from a full list, as a list from etcd does.
			for range tc.keys * 2 / 3 {
				put()
			}
			r.push()
			setAll := func(status registry.Status) {
				for k, e := range r.entries {
					md := e.attr.inst.Metadata
					md.Status = status
					v, err := registry.Encode(e.attr.inst.Addr, md)
					if err != nil {
						t.Fatal(err)
					}
					r.put(k, v, 1, true)
				}
			}
			for b := range tc.batches {
				switch {
				case tc.drainAt < 0 || b < tc.drainAt || b > tc.drainAt+4:
					ops := 1 + rng.IntN(4)
					if rng.IntN(10) == 0 {
						ops = 1 + rng.IntN(tc.keys/2+1) // a burst
					}
					for range ops {
						if rng.IntN(3) == 0 {
							r.remove(key(rng.IntN(tc.keys)))
						} else {
							put()
						}
					}
				case b == tc.drainAt || b == tc.drainAt+4:
					setAll(registry.StatusServing)
				case b == tc.drainAt+1:
					setAll(registry.StatusDraining)
				default:
					// Still all draining: one more instance, draining
					// too, in each of two batches.
					for i := range tc.keys {
						if _, ok := r.entries[key(i)]; !ok {
							v, _ := registry.Encode(addr(i%tc.addrs), registry.Metadata{Weight: 1, Status: registry.StatusDraining, Zone: "a"})
							r.put(key(i), v, 1, true)
							break
						}
					}
				}
				r.push()
				got, want := cc.pushed[len(cc.pushed)-1], expectedList(r)
				if !sameEndpoints(got, want) {
					t.Fatalf("batch %d: pushed list of %d differs from the rebuilt list of %d:\n got %v\nwant %v", b, len(got), len(want), addrsOf(resolver.State{Endpoints: got}), addrsOf(resolver.State{Endpoints: want}))
				}
			}
			for i := range cc.pushed {
				if !sameEndpoints(cc.pushed[i], cc.copies[i]) {
					t.Fatalf("list %d of %d was modified after it was pushed", i, len(cc.pushed))
				}
			}
			if len(r.dirty) != 0 {
				t.Fatalf("%d entries still dirty after a push", len(r.dirty))
			}
		})
	}
}

// TestInternedValuesArePruned: a long-lived client follows a fleet whose
// instances come and go with labels and versions of their own; the
// interned strings and label sets of instances gone are dropped, and those
// of live instances stay shared.
func TestInternedValuesArePruned(t *testing.T) {
	opts := defaultOptions()
	r := &etcdResolver{b: &Builder{opts: opts}, cc: &pushRecorder{}, service: "user", prefix: registry.ServicePrefix(opts.prefix, "user"),
		entries: map[string]*entry{}, strs: map[string]string{}, labelSets: map[string]map[string]string{}}
	const live = 50
	key := func(i int) string { return registry.Key(opts.prefix, "user", fmt.Sprintf("i%05d", i)) }
	put := func(i int) {
		md := registry.Metadata{Weight: 1, Status: registry.StatusServing, Zone: "a",
			Version: fmt.Sprintf("v%d", i/100), Labels: map[string]string{"pod": fmt.Sprintf("pod-%d", i), "app": "user"}}
		v, err := registry.Encode(addr(i%live), md)
		if err != nil {
			t.Fatal(err)
		}
		if !r.put(key(i), v, 1, true) {
			t.Fatalf("instance %d: no change", i)
		}
	}
	// 20,000 instances pass through, at most 50 at a time.
	most := 0
	for i := range 20000 {
		put(i)
		if i >= live {
			r.remove(key(i - live))
		}
		most = max(most, len(r.strs)+len(r.labelSets))
	}
	// Live: 50 pods, 50 label sets, "app", "user", "pod", "a",
	// "serving", and one or two versions.
	// Pruning at twice the live size (plus the slack) keeps them under
	// three times it; without pruning they reach 40,000.
	if most > 3*(2*live+7)+internSlack {
		t.Fatalf("intern tables grew to %d entries for %d live instances", most, live)
	}
	// What live instances use is still interned after a pruning: the
	// oldest live instance's label set arrives as the same map, and its
	// version as the same string.
	r.pruneIntern()
	e := r.entries[key(20000-live)]
	v, err := registry.Encode(addr(1), registry.Metadata{Weight: 1, Version: e.attr.inst.Metadata.Version, Labels: map[string]string{"pod": fmt.Sprintf("pod-%d", 20000-live), "app": "user"}})
	if err != nil {
		t.Fatal(err)
	}
	r.put(key(99999), v, 1, true)
	f := r.entries[key(99999)]
	if fmt.Sprintf("%p", f.attr.inst.Metadata.Labels) != fmt.Sprintf("%p", e.attr.inst.Metadata.Labels) {
		t.Error("a live instance's label set was not shared with a new instance carrying the same labels")
	}
	if unsafe.StringData(f.attr.inst.Metadata.Version) != unsafe.StringData(e.attr.inst.Metadata.Version) {
		t.Error("a live instance's version string was not shared")
	}
}
