package pick

import "google.golang.org/grpc/balancer"

// Keyed keeps one *T per instance address from one picker to the next, so
// that counters survive picker rebuilds; instances gone from the list are
// forgotten.
type Keyed[T any] struct {
	m map[string]*T
}

// Sync returns the value of each of eps, in order, making new ones with
// fresh for addresses not seen before, and forgets the others.
func (k *Keyed[T]) Sync(eps []Endpoint, fresh func() *T) []*T {
	out := make([]*T, len(eps))
	next := make(map[string]*T, len(eps))
	for i, e := range eps {
		v, ok := k.m[e.Addr]
		if !ok {
			v = fresh()
		}
		next[e.Addr], out[i] = v, v
	}
	k.m = next
	return out
}

// OnDone returns res with done called after its own Done, if any.
func OnDone(res balancer.PickResult, done func(balancer.DoneInfo)) balancer.PickResult {
	if prev := res.Done; prev != nil {
		res.Done = func(di balancer.DoneInfo) {
			prev(di)
			done(di)
		}
	} else {
		res.Done = done
	}
	return res
}

// Subsets keeps one child policy per subset name, for the policies that
// split instances into subsets (zones, versions) and pick inside each with
// a child policy, so each subset keeps its own statistics.
type Subsets struct {
	spec Spec
	m    map[string]Policy
	used map[string]bool
}

// NewSubsets returns subsets whose policies spec makes.
func NewSubsets(spec Spec) *Subsets {
	return &Subsets{spec: spec, m: map[string]Policy{}, used: map[string]bool{}}
}

// Picker returns the child picker of subset name over eps, or nil when
// none of eps is ready.
func (s *Subsets) Picker(name string, eps []Endpoint) balancer.Picker {
	p, ok := s.m[name]
	if !ok {
		p = s.spec.NewPolicy()
		s.m[name] = p
	}
	s.used[name] = true
	if len(eps) == 0 {
		return nil
	}
	return p.Picker(eps)
}

// Done forgets the subsets not used since the last Done.
func (s *Subsets) Done() {
	for name := range s.m {
		if !s.used[name] {
			delete(s.m, name)
		}
	}
	clear(s.used)
}
