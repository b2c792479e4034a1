package discovery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/internal/quote"
)

// pageTimeouts is how many times one page may run out of time before a
// list gives up; each time the page's timeout doubles (up to
// maxPageTimeoutFactor times the request timeout) and its size halves.
const (
	pageTimeouts         = 4
	maxPageTimeoutFactor = 8
)

// pageBytes is the most key and value bytes a page should hold: a page
// that held more makes the next one half as many keys.
const pageBytes = 2 << 20

// readPages reads the keys under the service's prefix, a page at a time,
// and calls fn for each in key order until fn returns false; stopped is
// then the key fn stopped at. At rev 0 the first page is a linearizable
// read of the latest revision, which the other pages are read at: the
// keys are those one Get would return at that revision, however many
// change meanwhile. A non-zero rev reads at that revision.
//
// Each page is one request with its own timeout. A page after the first
// that runs out of time is read again, from where it began, with twice the
// time and half the keys: a slow etcd or a large service costs more
// requests, never a list started over.
func (r *etcdResolver) readPages(rev int64, keysOnly bool, fn func(kv *mvccpb.KeyValue) bool) (hdr *etcdserverpb.ResponseHeader, stopped string, err error) {
	end := clientv3.GetPrefixRangeEnd(r.prefix)
	from := r.prefix
	size := int64(r.b.opts.pageSize)
	timeout := r.b.opts.requestTimeout
	timeouts := 0
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(size)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		ctx, cancel := context.WithTimeout(r.ctx, timeout)
		resp, err := r.b.cli.Get(ctx, from, opts...)
		cancel()
		if err != nil {
			// Only once etcd has answered: an etcd that does not
			// answer at all fails the list at once, as it should.
			if hdr != nil && isTimeout(err) && r.ctx.Err() == nil && timeouts < pageTimeouts {
				timeouts++
				timeout = min(2*timeout, maxPageTimeoutFactor*r.b.opts.requestTimeout)
				size = max(1, size/2)
				continue
			}
			return nil, "", err
		}
		if hdr == nil {
			hdr = resp.Header
			rev = resp.Header.Revision
		}
		if hookPage != nil {
			hookPage(rev)
		}
		bytes := 0
		for _, kv := range resp.Kvs {
			bytes += len(kv.Key) + len(kv.Value)
			if !fn(kv) {
				return hdr, string(kv.Key), nil
			}
		}
		// Pages of large values get fewer keys, down to one.
		switch {
		case bytes > pageBytes:
			size = max(1, size/2)
		case bytes < pageBytes/2 && timeouts == 0:
			size = min(2*size, int64(r.b.opts.pageSize))
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return hdr, "", nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// hookPage, when set by a test, runs after each page of a list is read,
// with the revision the list is read at.
var hookPage func(rev int64)

// countAfter counts the keys under the service's prefix after key, at rev.
func (r *etcdResolver) countAfter(key string, rev int64) (int64, error) {
	ctx, cancel := context.WithTimeout(r.ctx, r.b.opts.requestTimeout)
	defer cancel()
	resp, err := r.b.cli.Get(ctx, key+"\x00", clientv3.WithRange(clientv3.GetPrefixRangeEnd(r.prefix)),
		clientv3.WithRev(rev), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Count, nil
}

// isTimeout reports whether err says a request ran out of time (the
// client's deadline, or etcd's own request timeout).
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, rpctypes.ErrTimeout) {
		return true
	}
	return status.Code(err) == codes.DeadlineExceeded
}

// maxSkipEvents is how many values a list reports one by one as skipped;
// one event sums up the others.
const maxSkipEvents = 10

// list reads the whole service at one revision and makes it the list.
//
// Each list after the first checks that the etcd it reads is the one the
// last list came from: a key unchanged since the last list's revision must
// be there at the same revision, and a key the last list had and this one
// lacks must have been there at that revision. A new cluster id, a lower
// revision, or a history that differs (an etcd restarted empty with its
// usual configuration, which keeps its cluster id, and written to past the
// last list's revision) is an etcd that lost its data: the instances it
// forgot are kept for the reset grace period.
func (r *etcdResolver) list() error {
	r.lastTry = time.Now()
	// This list reads through the connection as it is now: a reconnection
	// before it needs no other.
	select {
	case <-r.reconnected:
	default:
	}
	prevRev, prevCluster := r.rev, r.cluster
	check := prevCluster != 0
	leftOutBefore := r.leftOut
	r.gen++
	gen := r.gen
	r.listing, r.listSkips = true, 0
	defer func() { r.listing = false }()
	kept, changes := 0, 0
	var mismatch string
	hdr, stopped, err := r.readPages(0, false, func(kv *mvccpb.KeyValue) bool {
		key := string(kv.Key)
		var hadMod int64
		had := r.entries[key]
		if had != nil {
			hadMod = had.mod
		}
		if r.put(key, kv.Value, kv.ModRevision, false) {
			changes++
		}
		e := r.entries[key]
		if e == nil {
			return true // skipped
		}
		e.gen = gen
		kept++
		if check && mismatch == "" && kv.ModRevision <= prevRev {
			switch {
			case had != nil && hadMod != 0 && hadMod != kv.ModRevision:
				mismatch = fmt.Sprintf("key %s is at revision %d, the last list had it at %d", quote.Bounded(key), kv.ModRevision, hadMod)
			case had == nil && leftOutBefore == 0:
				mismatch = fmt.Sprintf("key %s, at revision %d, was not in the last list at %d", quote.Bounded(key), kv.ModRevision, prevRev)
			}
		}
		return kept < r.b.opts.maxInstances
	})
	if err != nil {
		return fmt.Errorf("discovery: list %s from etcd: %w", r.prefix, err)
	}
	var leftOut int64
	if stopped != "" {
		if leftOut, err = r.countAfter(stopped, hdr.Revision); err != nil {
			return fmt.Errorf("discovery: count %s beyond %d instances: %w", r.prefix, r.b.opts.maxInstances, err)
		}
	}
	if n := r.listSkips - maxSkipEvents; n > 0 {
		r.emit(Event{Kind: EventSkipped, Err: fmt.Errorf("discovery: %d more values under %s skipped", n, r.prefix)})
	}
	var reason string
	switch {
	case !check:
	case hdr.ClusterId != prevCluster || hdr.Revision < prevRev:
		reason = fmt.Sprintf("cluster %x at revision %d; the last list was of cluster %x at %d", hdr.ClusterId, hdr.Revision, prevCluster, prevRev)
	case mismatch != "":
		reason = mismatch
	default:
		reason = r.checkGone(gen, prevRev)
	}
	reset := reason != ""
	keepStale := reset && r.b.opts.resetGrace > 0
	for key, e := range r.entries {
		if e.gen == gen {
			continue
		}
		if keepStale || e.stale && r.grace != nil {
			if !e.stale {
				e.stale = true
				r.stale++
			}
			continue
		}
		r.remove(key)
		changes++
	}
	r.rev, r.cluster, r.leftOut = hdr.Revision, hdr.ClusterId, leftOut
	if reset {
		r.emit(Event{Kind: EventReset, Err: fmt.Errorf("discovery: etcd came back without its data (%s); keeping %d unseen instances for %s",
			reason, r.stale, r.b.opts.resetGrace)})
		if keepStale && r.stale > 0 {
			if r.grace != nil {
				r.grace.Stop()
			}
			r.grace = time.NewTimer(r.b.opts.resetGrace)
		}
	}
	if leftOut > 0 {
		r.emit(Event{Kind: EventLimited, Changes: int(leftOut), Err: fmt.Errorf("discovery: %s holds %d keys beyond the first %d instances (WithMaxInstances); they are left out",
			r.prefix, leftOut, r.b.opts.maxInstances)})
	}
	// A list equal to what grpc has (served from the snapshot file, say)
	// needs no update.
	if changes > 0 || len(r.dirty) > 0 || !r.pushed || r.refused > 0 {
		r.push()
	}
	r.emit(Event{Kind: EventListed, Changes: changes})
	return nil
}

// checkGone checks, when the list lacks instances the last one had, that
// etcd had them at the last list's revision, and says why not if it did
// not ("" if it did, or if that revision is compacted and nothing can be
// told).
func (r *etcdResolver) checkGone(gen uint32, prevRev int64) string {
	gone := make(map[string]int64)
	for key, e := range r.entries {
		if e.gen != gen && !e.stale && e.mod > 0 && e.mod <= prevRev {
			gone[key] = e.mod
		}
	}
	if len(gone) == 0 {
		return ""
	}
	want := len(gone)
	var differs string
	_, _, err := r.readPages(prevRev, true, func(kv *mvccpb.KeyValue) bool {
		mod, ok := gone[string(kv.Key)]
		if !ok {
			return true
		}
		if mod != kv.ModRevision {
			differs = fmt.Sprintf("key %s was at revision %d at revision %d, the last list had it at %d", quote.Bounded(string(kv.Key)), kv.ModRevision, prevRev, mod)
			return false
		}
		want--
		return want > 0
	})
	switch {
	case differs != "":
		return differs
	case err != nil:
		// Compacted, or etcd did not answer: nothing can be told, and
		// the instances left while the client was away.
		return ""
	case want > 0:
		return fmt.Sprintf("%d instances of the last list were not in etcd at its revision %d", want, prevRev)
	}
	return ""
}
