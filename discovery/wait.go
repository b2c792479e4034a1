package discovery

import (
	"context"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// wait waits for d, or until ResolveNow when the last attempt (a list or
// a watch) began at least five base backoffs ago. It ends early, and
// reports that the list must be read again, when the etcd client has
// connected again (etcd may have lost its data meanwhile).
//
// With leader, it also ends as soon as etcd answers a linearizable read
// of the service, which it can only do with a leader: a watch etcd
// cancelled for want of one is resumed as soon as the member has one
// again (after a partition heals, say), not when the backoff ends.
func (r *etcdResolver) wait(d time.Duration, leader bool) (relist bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	var answered chan struct{}
	if leader {
		answered = make(chan struct{})
		ctx, cancel := context.WithCancel(r.ctx)
		var wg sync.WaitGroup
		wg.Go(func() { r.probeLeader(ctx, answered) })
		defer wg.Wait()
		defer cancel()
	}
	for {
		select {
		case <-r.ctx.Done():
			return false
		case <-t.C:
			return false
		case <-answered:
			return false
		case <-r.reconnected:
			return true
		case <-r.now:
			if time.Since(r.lastTry) >= 5*r.b.opts.backoffBase {
				return false
			}
		case <-r.retryC():
			r.retry() // a refused list (from the snapshot file, say) while etcd is away
		}
	}
}

// probeLeader closes answered once etcd answers a linearizable read of the
// service, trying again a base backoff after each failure, until ctx ends.
// Such a read waits on the member until it has a leader (or its own
// request timeout ends) and returns as soon as it has.
func (r *etcdResolver) probeLeader(ctx context.Context, answered chan<- struct{}) {
	for {
		rctx, cancel := context.WithTimeout(ctx, r.b.opts.backoffMax+r.b.opts.requestTimeout)
		_, err := r.b.cli.Get(rctx, r.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if err == nil {
			close(answered)
			return
		}
		t := time.NewTimer(r.b.opts.backoffBase)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
