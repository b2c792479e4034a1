package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lodestar-rpc/lodestar/internal/quote"
)

// A key guard watches one key the registrar wrote and tells the run loop
// whatever happens to it, so that an instance never stays silently missing
// or wrong in etcd while its lease lives.

type keyEventKind int

const (
	keyDeleted   keyEventKind = iota + 1 // deleted, by anyone
	keyTaken                             // written under another lease (or none)
	keyPut                               // written under our lease: by us, or over us
	keyCompacted                         // the guard missed events: write the key again
)

type keyEvent struct {
	kind  keyEventKind
	key   string
	guard uint64           // token of the guard that saw it
	lease clientv3.LeaseID // lease before the delete, or the one written under
	value string           // for keyPut: the value written
	rev   int64            // for keyPut: its mod revision
}

// Repairs of a value overwritten under our lease are paced: the first is
// immediate, each further one waits the registrar's backoff, so a writer
// that keeps overwriting the key meets at most one put back per backoff
// period instead of a write war. A key left alone for repairQuiet starts
// over.
const repairQuiet = 10 * time.Second

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
					r.sendKey(ctx, keyEvent{kind: keyCompacted, key: key, guard: token})
				}
				break
			}
			fails = 0
			for _, ev := range resp.Events {
				rev = ev.Kv.ModRevision + 1
				ke := keyEvent{key: key, guard: token, lease: clientv3.LeaseID(ev.Kv.Lease)}
				switch {
				case ev.Type == mvccpb.DELETE:
					ke.kind, ke.lease = keyDeleted, 0
					if ev.PrevKv != nil {
						ke.lease = clientv3.LeaseID(ev.PrevKv.Lease)
					}
				case ke.lease != lease:
					ke.kind = keyTaken
				default:
					ke.kind, ke.value, ke.rev = keyPut, string(ev.Kv.Value), ev.Kv.ModRevision
				}
				r.sendKey(ctx, ke)
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
	step := false
	switch ev.kind {
	case keyCompacted:
		e.synced, step = 0, true
	case keyDeleted:
		e.synced, step = 0, true
		if lease != 0 && ev.lease == lease {
			report = errors.New("registry: key deleted from etcd (by someone else, or with its lease); putting it back")
		}
	case keyTaken:
		report = fmt.Errorf("registry: key overwritten in etcd under lease %x, not ours (%x): another registrar uses this service and id", int64(ev.lease), int64(lease))
	case keyPut:
		// Ours if it is the value we hold, a write older than our last
		// one, or about to be replaced by a write of ours anyway.
		if ev.value == e.val || ev.rev <= e.rev || e.synced < e.gen {
			break
		}
		e.synced, step = 0, true
		r.paceRepair(e)
		report = fmt.Errorf("registry: value overwritten in etcd under our lease %x at revision %d: %s; putting ours back", int64(lease), ev.rev, quote.Bounded(ev.value))
	}
	r.mu.Unlock()
	if report != nil {
		r.emit(Event{Kind: EventKeyLost, Lease: lease, Key: ev.key, Err: report})
	}
	return step
}

// paceRepair schedules the put back of e after another writer overwrote
// it (see repairQuiet). r.mu is held.
func (r *Registrar) paceRepair(e *entry) {
	now := time.Now()
	if now.Sub(e.lastRepair) > repairQuiet {
		e.repairs = 0
	}
	e.repairs++
	e.lastRepair = now
	if e.repairs > 1 {
		e.notBefore = now.Add(r.backoff(e.repairs - 1))
	}
}
