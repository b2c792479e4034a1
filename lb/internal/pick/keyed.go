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
