package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Writes are batched into transactions of at most maxBatchOps puts (etcd's
// default --max-txn-ops is 128) and, past the first put, maxBatchBytes of
// keys and values, so that a batch stays under etcd's default request
// limit (1.5 MiB) whatever the values: a value is at most MaxValueBytes.
const (
	maxBatchOps   = 64
	maxBatchBytes = 1 << 20
)

type pendingPut struct {
	e        *entry
	gen      uint64
	val      string
	mayExist bool // e.mayExist before this attempt
}

// refusal is a write etcd refused for one key alone; the key is retried
// with backoff while the other writes go on.
type refusal struct {
	key string
	err error
}

// refusedError is step's error when the only failures were refusals.
type refusedError struct{ refusals []refusal }

func (e *refusedError) Error() string {
	return fmt.Sprintf("etcd refused %d write(s), retried alone while the others go on; first: %v", len(e.refusals), e.refusals[0].err)
}

func (e *refusedError) Unwrap() error { return e.refusals[0].err }

// putPending writes every entry not yet written under the live lease. A
// write etcd refuses fails its own entry alone: the batch it was in is
// split until the refused entry is by itself, and every other entry is
// written. An error is returned only when etcd did not answer or the lease
// is gone; then the pass stops, to be retried after a backoff.
func (r *Registrar) putPending(st *loopState) error {
	now := time.Now()
	r.mu.Lock()
	var todo []pendingPut
	for _, e := range r.entries {
		if e.synced >= e.gen {
			continue
		}
		if e.notBefore.After(now) { // a repair paced against another writer
			if st.wakeAt.IsZero() || e.notBefore.Before(st.wakeAt) {
				st.wakeAt = e.notBefore
			}
			continue
		}
		todo = append(todo, pendingPut{e: e, gen: e.gen, val: e.val, mayExist: e.mayExist})
		// Until etcd refuses it, this write may land: a Deregister from
		// now on must delete the key.
		e.mayExist = true
	}
	r.mu.Unlock()
	slices.SortFunc(todo, func(a, b pendingPut) int { return strings.Compare(a.e.key, b.e.key) })
	lease := st.ses.id
	for len(todo) > 0 {
		n := batchLen(todo)
		if err := r.putBatch(st, lease, todo[:n]); err != nil {
			return err
		}
		todo = todo[n:]
	}
	return nil
}

// batchLen returns how many of todo go in the next transaction.
func batchLen(todo []pendingPut) int {
	size := 0
	for i, p := range todo {
		size += len(p.e.key) + len(p.val)
		if i == maxBatchOps || i > 0 && size > maxBatchBytes {
			return i
		}
	}
	return len(todo)
}

// putBatch writes batch in one transaction under lease, splitting it in
// halves when etcd refuses it.
func (r *Registrar) putBatch(st *loopState, lease clientv3.LeaseID, batch []pendingPut) error {
	ops := make([]clientv3.Op, len(batch))
	for i, p := range batch {
		ops[i] = clientv3.OpPut(p.e.key, p.val, clientv3.WithLease(lease))
	}
	var rev int64
	err := r.request(st, "put "+describe(batch), func(ctx context.Context) error {
		resp, err := r.cli.Txn(ctx).Then(ops...).Commit()
		if err == nil {
			rev = resp.Header.Revision
		}
		return err
	})
	switch {
	case err == nil:
		r.written(batch, lease, rev)
		return nil
	case refused(err) && len(batch) > 1:
		r.opts.logger.LogAttrs(r.ctx, slog.LevelDebug, "registry: etcd refused a batch; writing it in halves",
			slog.Int("writes", len(batch)), slog.String("first", batch[0].e.key), slog.Any("err", err))
		h := len(batch) / 2
		if err := r.putBatch(st, lease, batch[:h]); err != nil {
			return err
		}
		return r.putBatch(st, lease, batch[h:])
	case refused(err):
		r.refusedPut(batch[0], err)
		st.refused = append(st.refused, refusal{key: batch[0].e.key, err: err})
		return nil
	}
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		r.leaseLost(st, err)
	}
	r.mu.Lock()
	for _, p := range batch {
		p.e.err = err
	}
	r.broadcastLocked()
	r.mu.Unlock()
	return err
}

// written records a successful write of batch at revision rev.
func (r *Registrar) written(batch []pendingPut, lease clientv3.LeaseID, rev int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range batch {
		e := p.e
		if cur := r.entries[e.key]; cur != e {
			if cur == nil {
				delete(r.unsure, e.key) // the delete that follows is needed
			}
			continue // deregistered meanwhile; its delete follows
		}
		if e.synced < p.gen {
			e.synced = p.gen
		}
		e.rev = max(e.rev, rev)
		e.confirmed = true
		e.err = nil
		e.refusals = 0
		if e.guard == 0 {
			gctx, gcancel := context.WithCancel(r.ctx)
			r.guardSeq++
			e.guard, e.guardCancel = r.guardSeq, gcancel
			r.wg.Add(1)
			go r.guard(gctx, e.key, r.guardSeq, lease, rev+1)
		}
	}
	r.broadcastLocked()
}

// refusedPut records etcd's refusal of p's write, which left nothing in
// etcd.
func (r *Registrar) refusedPut(p pendingPut, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := p.e
	e.err = err
	e.refusals++
	if r.entries[e.key] == e {
		e.mayExist = p.mayExist
	} else if !p.mayExist {
		// Deregistered while this, its only write, was on its way: there
		// is nothing to delete.
		if _, ok := r.deleting[e.key]; ok {
			if _, back := r.entries[e.key]; !back {
				delete(r.deleting, e.key)
				delete(r.unsure, e.key)
			}
		}
	}
	r.broadcastLocked()
}

func describe(batch []pendingPut) string {
	if len(batch) == 1 {
		return batch[0].e.key
	}
	return fmt.Sprintf("%d keys from %s", len(batch), batch[0].e.key)
}
