package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The run loop is the only writer to etcd while the registrar lives: it
// grants the lease, keeps it alive, writes pending puts and deletes, and
// starts over with a new lease when the old one is lost.

// session is one granted lease being kept alive.
type session struct {
	id        clientv3.LeaseID
	ka        <-chan *clientv3.LeaseKeepAliveResponse
	cancel    context.CancelFunc
	announced bool // the registered event for this lease was sent
}

type loopState struct {
	ses    *session
	lostAt time.Time // when the last lease was lost; zero if never or recovered
	fails  int       // consecutive failed steps
}

func (r *Registrar) run() {
	defer r.loopWG.Done()
	var st loopState
	defer func() {
		if st.ses != nil {
			st.ses.cancel()
		}
	}()
	for {
		var retry <-chan time.Time
		var timer *time.Timer
		if err := r.step(&st); err != nil {
			if r.ctx.Err() != nil {
				return
			}
			if r.cli.Ctx().Err() != nil {
				fatal := fmt.Errorf("registry: etcd client closed under the registrar; nothing more can be written: %w", err)
				r.mu.Lock()
				r.fatal = fatal
				r.state = StateClosed
				r.broadcastLocked()
				r.mu.Unlock()
				r.emit(Event{Kind: EventLeaseLost, Err: fatal})
				return
			}
			st.fails++
			d := r.backoff(st.fails)
			r.emit(Event{Kind: EventRetrying, Attempt: st.fails, Backoff: d, Err: err, Lease: r.Lease()})
			timer = time.NewTimer(d)
			retry = timer.C
		} else {
			st.fails = 0
		}
	wait:
		for {
			var ka <-chan *clientv3.LeaseKeepAliveResponse
			if st.ses != nil {
				ka = st.ses.ka
			}
			select {
			case <-r.ctx.Done():
				if timer != nil {
					timer.Stop()
				}
				return
			case <-r.poke:
				break wait
			case <-retry:
				break wait
			case ev := <-r.keyCh:
				if r.onKeyEvent(ev) {
					break wait
				}
			case _, open := <-ka:
				if open {
					continue
				}
				if r.ctx.Err() != nil {
					return
				}
				r.leaseLost(&st, nil)
				break wait
			}
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// step brings etcd in line with the registrar's entries. It returns the
// first error; the caller retries after a backoff.
func (r *Registrar) step(st *loopState) error {
	if err := r.deletePending(); err != nil {
		return err
	}
	r.mu.Lock()
	n := len(r.entries)
	r.mu.Unlock()
	if n == 0 {
		// Nothing to hold: lost leases keep nothing of ours, and there is
		// no outage to report.
		r.revokeOld()
		st.lostAt = time.Time{}
		r.settle(st)
		return nil
	}
	if st.ses == nil {
		if err := r.grant(st); err != nil {
			return err
		}
	}
	if err := r.putPending(st); err != nil {
		return err
	}
	r.settle(st)
	return nil
}

func (r *Registrar) grant(st *loopState) error {
	if st.fails > 0 {
		// grpc's reconnect backoff grows to minutes; after an outage, try
		// now rather than when it next wakes up.
		if cc := r.cli.ActiveConnection(); cc != nil {
			cc.ResetConnectBackoff()
		}
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.requestTimeout)
	g, err := r.cli.Grant(ctx, r.ttl)
	cancel()
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	kctx, kcancel := context.WithCancel(r.ctx)
	ka, err := r.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		kcancel()
		r.revokeQuietly(g.ID)
		return fmt.Errorf("keep lease %x alive: %w", int64(g.ID), err)
	}
	st.ses = &session{id: g.ID, ka: ka, cancel: kcancel}
	r.mu.Lock()
	r.lease = g.ID
	for _, e := range r.entries {
		e.synced = 0
	}
	r.mu.Unlock()
	return nil
}

type pendingPut struct {
	e   *entry
	gen uint64
	val string
}

func (r *Registrar) putPending(st *loopState) error {
	r.mu.Lock()
	var todo []pendingPut
	for _, e := range r.entries {
		if e.synced < e.gen {
			todo = append(todo, pendingPut{e, e.gen, e.val})
		}
	}
	r.mu.Unlock()
	slices.SortFunc(todo, func(a, b pendingPut) int { return strings.Compare(a.e.key, b.e.key) })
	lease := st.ses.id
	for chunk := range slices.Chunk(todo, 64) {
		ops := make([]clientv3.Op, len(chunk))
		for i, p := range chunk {
			ops[i] = clientv3.OpPut(p.e.key, p.val, clientv3.WithLease(lease))
		}
		ctx, cancel := context.WithTimeout(r.ctx, r.opts.requestTimeout)
		resp, err := r.cli.Txn(ctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			err = fmt.Errorf("put %s: %w", describe(chunk), err)
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				r.leaseLost(st, err)
			}
			r.mu.Lock()
			for _, p := range chunk {
				p.e.err = err
			}
			r.broadcastLocked()
			r.mu.Unlock()
			return err
		}
		rev := resp.Header.Revision
		r.mu.Lock()
		for _, p := range chunk {
			if cur := r.entries[p.e.key]; cur != p.e {
				continue // deregistered meanwhile; its delete follows
			}
			if p.e.synced < p.gen {
				p.e.synced = p.gen
			}
			p.e.err = nil
			if p.e.guard == 0 {
				gctx, gcancel := context.WithCancel(r.ctx)
				r.guardSeq++
				p.e.guard, p.e.guardCancel = r.guardSeq, gcancel
				r.wg.Add(1)
				go r.guard(gctx, p.e.key, r.guardSeq, lease, rev+1)
			}
		}
		r.broadcastLocked()
		r.mu.Unlock()
	}
	return nil
}

// deletePending deletes the keys of deregistered instances, but only where
// they are still held by one of the registrar's leases: a key that another
// registrar has taken over since is not ours to delete.
func (r *Registrar) deletePending() error {
	r.mu.Lock()
	keys := make([]string, 0, len(r.deleting))
	for k := range r.deleting {
		keys = append(keys, k)
	}
	var leases []clientv3.LeaseID
	if r.lease != 0 {
		leases = append(leases, r.lease)
	}
	leases = append(leases, r.oldLeases...)
	r.mu.Unlock()
	slices.Sort(keys)
	for _, k := range keys {
		var err error
		for _, id := range leases {
			ctx, cancel := context.WithTimeout(r.ctx, r.opts.requestTimeout)
			_, err = r.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.LeaseValue(k), "=", int64(id))).
				Then(clientv3.OpDelete(k)).
				Commit()
			cancel()
			if err != nil {
				break
			}
		}
		r.mu.Lock()
		if _, ok := r.deleting[k]; ok {
			if err != nil {
				r.deleting[k] = err
			} else {
				delete(r.deleting, k)
			}
		}
		r.broadcastLocked()
		r.mu.Unlock()
		if err != nil {
			return fmt.Errorf("delete %s: %w", k, err)
		}
	}
	return nil
}

// settle updates the state once a step wrote everything, announces a
// (re-)registration, and revokes the lease that was lost.
func (r *Registrar) settle(st *loopState) {
	r.mu.Lock()
	all := r.lease != 0 && len(r.deleting) == 0 && len(r.entries) > 0
	for _, e := range r.entries {
		if e.synced < e.gen {
			all = false
		}
	}
	switch {
	case r.state == StateClosed:
	case len(r.entries) == 0 && len(r.deleting) == 0:
		r.state = StateIdle
	case all:
		r.state = StateRegistered
	default:
		r.state = StatePending
	}
	r.broadcastLocked()
	n := len(r.entries)
	r.mu.Unlock()
	if !all || st.ses == nil || st.ses.announced {
		return
	}
	st.ses.announced = true
	if st.lostAt.IsZero() {
		r.emit(Event{Kind: EventRegistered, Lease: st.ses.id, Instances: n})
		return
	}
	outage := time.Since(st.lostAt)
	st.lostAt = time.Time{}
	// The instances now live under the new lease; the old ones, if etcd
	// kept them (a restart with data restores leases), hold nothing of ours
	// and would linger for a TTL.
	r.revokeOld()
	r.emit(Event{Kind: EventReregistered, Lease: st.ses.id, Instances: n, Outage: outage})
}

// leaseLost forgets the live lease and marks every entry for re-writing.
func (r *Registrar) leaseLost(st *loopState, cause error) {
	ses := st.ses
	if ses == nil {
		return
	}
	ses.cancel()
	st.ses = nil
	st.fails = 0
	if st.lostAt.IsZero() {
		st.lostAt = time.Now()
	}
	if cause == nil {
		cause = r.lossReason(ses.id)
	}
	r.mu.Lock()
	r.lease = 0
	r.oldLeases = append(r.oldLeases, ses.id)
	for _, e := range r.entries {
		e.synced = 0
		e.stopGuard()
	}
	r.state = StatePending
	r.broadcastLocked()
	r.mu.Unlock()
	r.emit(Event{Kind: EventLeaseLost, Lease: ses.id, Err: cause})
}

func (r *Registrar) lossReason(id clientv3.LeaseID) error {
	ctx, cancel := context.WithTimeout(r.ctx, 300*time.Millisecond)
	defer cancel()
	resp, err := r.cli.TimeToLive(ctx, id)
	switch {
	case err != nil:
		return fmt.Errorf("registry: no keepalive answer within the %ds TTL (etcd unreachable?): %w", r.ttl, err)
	case resp.TTL <= 0:
		return fmt.Errorf("registry: lease %x is gone from etcd (expired, revoked, or etcd lost its data)", int64(id))
	default:
		return fmt.Errorf("registry: keepalive stream ended while lease %x had %ds left", int64(id), resp.TTL)
	}
}

// revokeOld revokes the lost leases, best effort: one that cannot be revoked
// now expires by itself within a TTL.
func (r *Registrar) revokeOld() {
	r.mu.Lock()
	old := r.oldLeases
	r.oldLeases = nil
	r.mu.Unlock()
	for _, id := range old {
		r.revokeQuietly(id)
	}
}

func (r *Registrar) revokeQuietly(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.requestTimeout)
	defer cancel()
	_, _ = r.cli.Revoke(ctx, id)
}

// guard watches one key written under lease and tells the loop when it is
// deleted or overwritten by someone else, so that an instance never stays
// silently missing from etcd while its lease lives.
func (r *Registrar) guard(ctx context.Context, key string, token uint64, lease clientv3.LeaseID, rev int64) {
	defer r.wg.Done()
	fails := 0
	for ctx.Err() == nil {
		wch := r.cli.Watch(clientv3.WithRequireLeader(ctx), key, clientv3.WithRev(rev), clientv3.WithPrevKV())
		for resp := range wch {
			if err := resp.Err(); err != nil {
				if resp.CompactRevision > 0 {
					// Events were lost to compaction: write the key again
					// and watch from what is left.
					rev = resp.CompactRevision
					r.sendKey(ctx, keyEvent{key: key, guard: token, verify: true})
				}
				break
			}
			fails = 0
			for _, ev := range resp.Events {
				rev = ev.Kv.ModRevision + 1
				switch {
				case ev.Type == mvccpb.DELETE:
					var prev clientv3.LeaseID
					if ev.PrevKv != nil {
						prev = clientv3.LeaseID(ev.PrevKv.Lease)
					}
					r.sendKey(ctx, keyEvent{key: key, guard: token, deleted: true, lease: prev})
				case clientv3.LeaseID(ev.Kv.Lease) != lease:
					r.sendKey(ctx, keyEvent{key: key, guard: token, lease: clientv3.LeaseID(ev.Kv.Lease)})
				}
			}
		}
		fails++
		t := time.NewTimer(r.backoff(fails))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (r *Registrar) sendKey(ctx context.Context, ev keyEvent) {
	select {
	case r.keyCh <- ev:
	case <-ctx.Done():
	}
}

// onKeyEvent applies a guard's report; it returns whether to step.
func (r *Registrar) onKeyEvent(ev keyEvent) bool {
	r.mu.Lock()
	e := r.entries[ev.key]
	if e == nil || e.guard != ev.guard { // from a guard stopped since

		r.mu.Unlock()
		return false
	}
	lease := r.lease
	var report error
	switch {
	case ev.verify:
		e.synced = 0
	case ev.deleted:
		e.synced = 0
		if lease != 0 && ev.lease == lease {
			report = errors.New("registry: key deleted from etcd (by someone else, or with its lease); putting it back")
		}
	default:
		report = fmt.Errorf("registry: key overwritten in etcd under lease %x, not ours (%x): another registrar uses this service and id", int64(ev.lease), int64(lease))
	}
	r.mu.Unlock()
	if report != nil {
		r.emit(Event{Kind: EventKeyLost, Lease: lease, Key: ev.key, Err: report})
	}
	return ev.verify || ev.deleted
}

func describe(chunk []pendingPut) string {
	if len(chunk) == 1 {
		return chunk[0].e.key
	}
	return fmt.Sprintf("%d keys starting %s", len(chunk), chunk[0].e.key)
}
