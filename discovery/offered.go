package discovery

// The offered list: the endpoints grpc gets, kept sorted and updated in
// one pass per push from the entries changed since the last one.

import (
	"cmp"
	"log/slog"
	"maps"
	"os"
	"slices"
	"unsafe"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"
)

func endpointOf(a *instanceAttr) resolver.Endpoint {
	return resolver.Endpoint{
		Addresses:  []resolver.Address{{Addr: a.inst.Addr}},
		Attributes: attributes.New(instanceKey{}, a),
	}
}

// compareEntries orders entries as the list grpc gets: by address, then
// by id (the key's last segment; every key shares the service prefix).
func compareEntries(a, b *entry) int {
	if c := cmp.Compare(a.attr.inst.Addr, b.attr.inst.Addr); c != 0 {
		return c
	}
	return cmp.Compare(a.attr.inst.ID, b.attr.inst.ID)
}

// compareListed orders an endpoint of r.offered against an address and id.
func compareListed(ep resolver.Endpoint, addr, id string) int {
	if c := cmp.Compare(ep.Addresses[0].Addr, addr); c != 0 {
		return c
	}
	return cmp.Compare(ep.Attributes.Value(instanceKey{}).(*instanceAttr).inst.ID, id)
}

// offers reports whether e is offered for new calls: not draining, and
// kept by the filter.
func (r *etcdResolver) offers(e *entry) bool {
	return !e.draining && (r.b.opts.filter == nil || r.b.opts.filter(e.attr.inst))
}

// nextOffered returns the offered list with the dirty entries' changes
// applied, in one pass over the last one: the work is a copy of N
// endpoints (the new list grpc requires) plus O(k log N) for k changes,
// never a walk over N entries. The last list is not modified: grpc may
// still hold it.
func (r *etcdResolver) nextOffered() (list []resolver.Endpoint, changed bool) {
	old := r.offered
	var dels []int
	var ins []*entry
	for _, e := range r.dirty {
		e.dirty = false
		if e.listed {
			i, ok := slices.BinarySearchFunc(old, e, func(ep resolver.Endpoint, e *entry) int {
				return compareListed(ep, e.listedAddr, e.attr.inst.ID)
			})
			if !ok {
				// Cannot happen while this file keeps listed and
				// offered in step; rebuild rather than push a wrong list.
				r.b.opts.logger.Error("discovery: offered list out of step; rebuilding", slog.String("service", r.service), slog.String("key", e.key))
				return r.rebuildOffered(), true
			}
			dels = append(dels, i)
			e.listed = false
		}
		if !e.gone && r.offers(e) {
			ins = append(ins, e)
			e.listed, e.listedAddr = true, e.attr.inst.Addr
		}
	}
	clear(r.dirty)
	r.dirty = r.dirty[:0]
	if len(dels) == 0 && len(ins) == 0 {
		return old, false
	}
	n := len(old) - len(dels) + len(ins)
	if n == 0 {
		return nil, true
	}
	slices.Sort(dels)
	slices.SortFunc(ins, compareEntries)
	out := r.takeSpare(n)
	d := 0
	// keep appends old[from:to] but the deleted ones, a run at a time.
	keep := func(from, to int) {
		for from < to {
			end := to
			if d < len(dels) && dels[d] < to {
				end = dels[d]
			}
			out = append(out, old[from:end]...)
			from = end
			if d < len(dels) && dels[d] == end && end < to {
				from++
				d++
			}
		}
	}
	at := 0
	for _, e := range ins {
		// The first position whose endpoint is not before e; one that
		// compares equal is e's old endpoint, deleted above.
		p, _ := slices.BinarySearchFunc(old[at:], e, func(ep resolver.Endpoint, e *entry) int {
			return compareListed(ep, e.attr.inst.Addr, e.attr.inst.ID)
		})
		keep(at, at+p)
		at += p
		out = append(out, e.ep)
	}
	keep(at, len(old))
	return out, true
}

// spareMin is the smallest list for which push keeps a spare: below it
// the list is under 32 KiB, which the allocator serves from memory
// already in use.
const spareMin = 1024

// takeSpare returns an empty slice with room for n endpoints: the spare
// if it is large enough, otherwise a new one.
func (r *etcdResolver) takeSpare(n int) []resolver.Endpoint {
	if cap(r.spare) >= n {
		out := r.spare[:0]
		r.spare = nil
		return out
	}
	r.spare = nil
	return make([]resolver.Endpoint, 0, n)
}

// prepareSpare allocates the memory of the next list after a push, off
// the path of the next change, and writes to each of its pages. A list of
// 10,000 endpoints is 320 KiB that grpc's API requires anew for every
// update; memory the process has not used before, or has given back to
// the system, costs a page fault per 4 KiB on first touch (80 for that
// list, about 100 µs here), which would otherwise fall between a change's
// arrival and its delivery.
func (r *etcdResolver) prepareSpare() {
	n := len(r.offered)
	if n < spareMin || cap(r.spare) >= n {
		return
	}
	buf := make([]resolver.Endpoint, n+n/32)
	for i := 0; i < len(buf); i += pageEndpoints {
		buf[i] = resolver.Endpoint{} // the first touch of this page
	}
	r.spare = buf[:0]
}

// pageEndpoints is how many endpoints fill a memory page.
var pageEndpoints = max(1, os.Getpagesize()/int(unsafe.Sizeof(resolver.Endpoint{})))

// rebuildOffered builds the offered list from every entry.
func (r *etcdResolver) rebuildOffered() []resolver.Endpoint {
	for _, e := range r.dirty {
		e.dirty = false
	}
	clear(r.dirty)
	r.dirty = r.dirty[:0]
	var out []resolver.Endpoint
	for _, e := range r.sortedEntries() {
		e.listed = r.offers(e)
		if e.listed {
			e.listedAddr = e.attr.inst.Addr
			out = append(out, e.ep)
		}
	}
	return out
}

// sortedEntries returns every entry, in list order.
func (r *etcdResolver) sortedEntries() []*entry {
	return slices.SortedFunc(maps.Values(r.entries), compareEntries)
}
