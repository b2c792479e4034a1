package discovery

import (
	"testing"

	"google.golang.org/grpc/resolver"

	"github.com/lodestar-rpc/lodestar/registry"
)

type nopCC struct{ fakeCC }

func (*nopCC) UpdateState(resolver.State) error { return nil }

// BenchmarkChangeAt10000 measures the resolver's own work for one change
// in a service of 10,000 instances: apply the PUT and push the list.
func BenchmarkChangeAt10000(b *testing.B) {
	r := &etcdResolver{b: &Builder{opts: defaultOptions()}, cc: &nopCC{}, service: "user",
		entries: map[string]*entry{}, strs: map[string]string{}, labelSets: map[string]map[string]string{}}
	r.b.opts.prefix = registry.DefaultPrefix
	md := registry.Metadata{Version: "v1", Zone: "z", Weight: 100, Status: registry.StatusServing, Labels: map[string]string{"a": "b"}}
	for i := range 10000 {
		v, _ := registry.Encode(addr(i), md)
		r.put(registry.Key(registry.DefaultPrefix, "user", addr(i)), v, 1, true)
	}
	v1, _ := registry.Encode(addr(5000), registry.Metadata{Weight: 7, Status: registry.StatusServing})
	v2, _ := registry.Encode(addr(5000), md)
	key := registry.Key(registry.DefaultPrefix, "user", addr(5000))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%2 == 0 {
			r.put(key, v1, 1, true)
		} else {
			r.put(key, v2, 1, true)
		}
		i++
		r.push()
	}
}
