package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

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
	ses     *session
	lostAt  time.Time     // when the last lease was lost; zero if never or recovered
	fails   int           // consecutive failed steps
	slow    int           // consecutive requests etcd did not answer in time
	rtt     time.Duration // slowest recent round trip of a request
	refused []refusal     // writes etcd refused in this step
	wakeAt  time.Time     // step again then (a paced repair), if not zero
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
		wait := time.Duration(-1)
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
			wait = r.backoff(st.fails)
			r.reportRetry(&st, err, wait)
		} else {
			st.fails = 0
		}
		if !st.wakeAt.IsZero() {
			if d := max(time.Until(st.wakeAt), 0); wait < 0 || d < wait {
				wait = d
			}
		}
		if wait >= 0 {
			timer = time.NewTimer(wait)
			retry = timer.C
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

// reportRetry reports a failed step: one event per write etcd refused,
// naming its key, and one for the step when something else failed.
func (r *Registrar) reportRetry(st *loopState, err error, wait time.Duration) {
	lease := r.Lease()
	for _, rf := range st.refused {
		r.emit(Event{Kind: EventRetrying, Attempt: st.fails, Backoff: wait, Key: rf.key, Lease: lease,
			Err: fmt.Errorf("registry: etcd refused the write of this instance alone; the others go on: %w", rf.err)})
	}
	var re *refusedError
	if !errors.As(err, &re) {
		r.emit(Event{Kind: EventRetrying, Attempt: st.fails, Backoff: wait, Err: err, Lease: lease})
	}
}

// step brings etcd in line with the registrar's entries. It returns the
// first error that stopped it (etcd not answering, the lease lost), or,
// when all it could not write was refused by etcd one key at a time, a
// *refusedError; the caller retries after a backoff.
func (r *Registrar) step(st *loopState) error {
	st.refused, st.wakeAt = nil, time.Time{}
	if err := r.deletePending(st); err != nil {
		return err
	}
	r.mu.Lock()
	n := len(r.entries)
	r.mu.Unlock()
	if n == 0 {
		// Nothing to hold: lost leases keep nothing of ours, and there is
		// no outage to report.
		r.revokeOld(st)
		st.lostAt = time.Time{}
		r.settle(st)
		return r.refusedErr(st)
	}
	if st.ses == nil {
		if err := r.grant(st); err != nil {
			r.failPending(err)
			return err
		}
	}
	if err := r.putPending(st); err != nil {
		return err
	}
	r.settle(st)
	return r.refusedErr(st)
}

func (r *Registrar) refusedErr(st *loopState) error {
	if len(st.refused) == 0 {
		return nil
	}
	return &refusedError{refusals: st.refused}
}

// failPending records err as the last error of every entry not yet
// written, so that a PendingError says which step failed.
func (r *Registrar) failPending(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.entries {
		if e.synced < e.gen {
			e.err = err
		}
	}
	r.broadcastLocked()
}

func (r *Registrar) grant(st *loopState) error {
	if st.fails > 0 {
		// grpc's reconnect backoff grows to minutes; after an outage, try
		// now rather than when it next wakes up.
		if cc := r.cli.ActiveConnection(); cc != nil {
			cc.ResetConnectBackoff()
		}
	}
	var g *clientv3.LeaseGrantResponse
	err := r.request(st, fmt.Sprintf("grant a %ds lease", r.ttl), func(ctx context.Context) error {
		var err error
		g, err = r.cli.Grant(ctx, r.ttl)
		return err
	})
	if err != nil {
		return err
	}
	kctx, kcancel := context.WithCancel(r.ctx)
	ka, err := r.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		kcancel()
		r.revokeQuietly(st, g.ID)
		return fmt.Errorf("keep lease %x alive: %w", int64(g.ID), err)
	}
	st.ses = &session{id: g.ID, ka: ka, cancel: kcancel}
	r.mu.Lock()
	r.lease = g.ID
	for _, e := range r.entries {
		// Written again under the new lease; the revision of the last
		// write is forgotten, since etcd may have come back empty with
		// its revisions started again (a foreign write at a lower
		// revision would otherwise pass for an old one of ours).
		e.synced, e.rev = 0, 0
	}
	r.mu.Unlock()
	return nil
}

// deletePending deletes the keys of deregistered instances, but only where
// they are still held by one of the registrar's leases: a key that another
// registrar has taken over since is not ours to delete. A delete etcd
// refuses fails that key alone.
func (r *Registrar) deletePending(st *loopState) error {
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
			err = r.request(st, "delete "+k, func(ctx context.Context) error {
				_, err := r.cli.Txn(ctx).
					If(clientv3.Compare(clientv3.LeaseValue(k), "=", int64(id))).
					Then(clientv3.OpDelete(k)).
					Commit()
				return err
			})
			if err != nil {
				break
			}
		}
		r.mu.Lock()
		// A key etcd never confirmed writing, whose delete it refuses, was
		// most likely refused its writes too; if one landed, it is under
		// one of our leases and leaves etcd with it (Close revokes them).
		giveUp := err != nil && refused(err) && r.unsure[k]
		if _, ok := r.deleting[k]; ok {
			if err != nil && !giveUp {
				r.deleting[k] = err
			} else {
				delete(r.deleting, k)
				delete(r.unsure, k)
			}
		}
		r.broadcastLocked()
		r.mu.Unlock()
		if err != nil && !giveUp {
			if refused(err) {
				st.refused = append(st.refused, refusal{key: k, err: err})
				continue
			}
			return err
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
	r.revokeOld(st)
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
func (r *Registrar) revokeOld(st *loopState) {
	r.mu.Lock()
	old := r.oldLeases
	r.oldLeases = nil
	r.mu.Unlock()
	for _, id := range old {
		r.revokeQuietly(st, id)
	}
}

func (r *Registrar) revokeQuietly(st *loopState, id clientv3.LeaseID) {
	_ = r.request(st, "revoke", func(ctx context.Context) error {
		_, err := r.cli.Revoke(ctx, id)
		return err
	})
}
