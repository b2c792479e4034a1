package faulttest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// keys follows the keys under a prefix in etcd through a watch, so the
// test waits on a key's puts and deletes as etcd reports them.
type keys struct {
	mu      sync.Mutex
	lease   map[string]clientv3.LeaseID // live keys and their leases
	waiters []*keyWaiter
}

// keyWaiter waits until cond holds for key: lease and ok say whether the
// key is present and under which lease.
type keyWaiter struct {
	key  string
	cond func(lease clientv3.LeaseID, ok bool) bool
	ch   chan time.Time // buffered: gets the time the condition held
}

// watchKeys follows prefix until the test ends.
func watchKeys(t *testing.T, cli *clientv3.Client, prefix string) *keys {
	k := &keys{lease: map[string]clientv3.LeaseID{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.follow(ctx, cli, prefix)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return k
}

// follow lists prefix and watches it from the next revision, and lists
// again if the watch ends with an error, until ctx ends.
func (k *keys) follow(ctx context.Context, cli *clientv3.Client, prefix string) {
	for ctx.Err() == nil {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			retry := time.NewTimer(50 * time.Millisecond) // etcd away or starting: ask again
			select {
			case <-retry.C:
			case <-ctx.Done():
				retry.Stop()
			}
			continue
		}
		now := time.Now()
		k.mu.Lock()
		k.lease = map[string]clientv3.LeaseID{}
		for _, kv := range resp.Kvs {
			k.lease[string(kv.Key)] = clientv3.LeaseID(kv.Lease)
		}
		k.notify(now)
		k.mu.Unlock()
		for wr := range cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil {
				break
			}
			now := time.Now()
			k.mu.Lock()
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					delete(k.lease, string(ev.Kv.Key))
				} else {
					k.lease[string(ev.Kv.Key)] = clientv3.LeaseID(ev.Kv.Lease)
				}
			}
			k.notify(now)
			k.mu.Unlock()
		}
	}
}

// notify hands the waiters whose condition holds the time it was seen,
// under k.mu.
func (k *keys) notify(now time.Time) {
	kept := k.waiters[:0]
	for _, w := range k.waiters {
		lease, ok := k.lease[w.key]
		if w.cond(lease, ok) {
			w.ch <- now
		} else {
			kept = append(kept, w)
		}
	}
	k.waiters = kept
}

// wait returns when cond holds for key, with the time etcd's report of
// it arrived (now, if it holds already).
func (k *keys) wait(ctx context.Context, key string, cond func(lease clientv3.LeaseID, ok bool) bool) (time.Time, error) {
	w := &keyWaiter{key: key, cond: cond, ch: make(chan time.Time, 1)}
	k.mu.Lock()
	if lease, ok := k.lease[key]; cond(lease, ok) {
		k.mu.Unlock()
		return time.Now(), nil
	}
	k.waiters = append(k.waiters, w)
	k.mu.Unlock()
	select {
	case at := <-w.ch:
		return at, nil
	case <-ctx.Done():
		k.mu.Lock()
		lease, ok := k.lease[key]
		k.mu.Unlock()
		return time.Time{}, fmt.Errorf("key %s (now present: %t, lease %x): %w", key, ok, int64(lease), ctx.Err())
	}
}

// leaseOf returns the lease key is held under, if present.
func (k *keys) leaseOf(key string) (clientv3.LeaseID, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	lease, ok := k.lease[key]
	return lease, ok
}

func present(_ clientv3.LeaseID, ok bool) bool { return ok }
func absent(_ clientv3.LeaseID, ok bool) bool  { return !ok }

// underNewLease holds once the key is present under a lease other than old.
func underNewLease(old clientv3.LeaseID) func(clientv3.LeaseID, bool) bool {
	return func(lease clientv3.LeaseID, ok bool) bool { return ok && lease != old }
}
