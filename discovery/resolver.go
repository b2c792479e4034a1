package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"

	"github.com/lodestar-rpc/lodestar/internal/hostport"
	"github.com/lodestar-rpc/lodestar/internal/quote"
	"github.com/lodestar-rpc/lodestar/registry"
)

// etcdResolver lists one service's instances at a revision, watches from the
// next one, and pushes every real change to grpc. Its goroutine (run) owns
// all the fields below the line; the others are set at construction.
type etcdResolver struct {
	b       *Builder
	cc      resolver.ClientConn
	service string
	prefix  string // the service's key prefix, ending in '/'
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	now     chan struct{} // ResolveNow: 1-slot
	// reconnected gets a token (1-slot) whenever the etcd client's
	// connection becomes ready again: etcd may have come back without its
	// data, which a resumed watch would never tell.
	reconnected chan struct{}
	connDone    chan struct{}

	// ---- owned by run ----
	entries   map[string]*entry            // by etcd key
	offered   []resolver.Endpoint          // the offered list last pushed, by address then id; never modified once pushed
	dirty     []*entry                     // entries changed since the last push
	draining  int                          // entries whose status is draining
	spare     []resolver.Endpoint          // memory for the next offered list, touched in advance; never pushed yet
	rev       int64                        // revision the list is at
	cluster   uint64                       // etcd cluster id the list came from; 0 before the first list
	pushed    bool                         // grpc has a list from us
	stale     int                          // entries kept across an etcd reset, not seen since
	grace     *time.Timer                  // ends the reset grace period; nil when none
	strs      map[string]string            // interned metadata strings
	labelSets map[string]map[string]string // interned label maps, by content
	snapDirty bool
	snapTimer *time.Timer
	lastTry   time.Time
	lastPush  time.Time // when grpc last got a list
	held      int       // changes applied but held back by the update interval
	// refused counts grpc's refusals of the list in a row; while it is
	// above 0, retryT re-offers the list after a backoff.
	refused int
	retryT  *time.Timer
	// internBase is the size of strs and labelSets after their last
	// pruning (see maybePruneIntern).
	internBase int
	// gen numbers the lists: an entry's gen is that of the last list
	// that saw it.
	gen uint32
	// listing is set while a list runs; listSkips counts the values it
	// skipped.
	listing   bool
	listSkips int
	// leftOut is how many keys the last list left out, beyond
	// maxInstances, plus the registrations the watch left out since;
	// limited counts those of the batch of watched changes being applied.
	leftOut int64
	limited int
}

type entry struct {
	ep       resolver.Endpoint
	attr     *instanceAttr
	key      string
	draining bool
	stale    bool // kept from before an etcd reset; not seen since
	gone     bool // removed from entries; still in dirty
	dirty    bool // in r.dirty
	// listed says whether r.offered holds this entry's endpoint, and
	// listedAddr under which address: offered is sorted by (address, id),
	// and the id never changes.
	listed     bool
	listedAddr string
	mod        int64  // etcd revision of the value; 0 if from a snapshot file
	gen        uint32 // the last list that saw the entry
}

// hookAfterList, when set by a test, runs after each list and before the
// watch that follows it starts.
var hookAfterList func()

// hookHeld, when set by a test, runs each time the watch holds changes
// back for the update interval; hookFlushed each time held changes are
// let go, with whether they made an update.
var (
	hookHeld    func()
	hookFlushed func(pushed bool)
)

func newResolver(b *Builder, service string, cc resolver.ClientConn) *etcdResolver {
	r := &etcdResolver{
		b:       b,
		cc:      cc,
		service: service,
		prefix:  registry.ServicePrefix(b.opts.prefix, service),
		done:    make(chan struct{}),
		now:     make(chan struct{}, 1),

		reconnected: make(chan struct{}, 1),
		connDone:    make(chan struct{}),
		entries:     make(map[string]*entry),
		strs:        make(map[string]string),
		labelSets:   make(map[string]map[string]string),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	go r.run()
	go r.watchConnection()
	return r
}

// watchConnection signals reconnected each time the etcd client's
// connection turns ready again.
func (r *etcdResolver) watchConnection() {
	defer close(r.connDone)
	conn := r.b.cli.ActiveConnection()
	if conn == nil {
		return
	}
	state := conn.GetState()
	// The first connection is no reconnection: nothing was read before
	// it. A failure seen first may hide a first connection that came
	// and went between two looks, so any Ready after one counts.
	before := state == connectivity.Ready
	for conn.WaitForStateChange(r.ctx, state) {
		// The state has left the one seen; Ready now means a new
		// connection, even when it was Ready before (it left and came
		// back between the two looks).
		next := conn.GetState()
		switch next {
		case connectivity.Ready:
			if before {
				select {
				case r.reconnected <- struct{}{}:
				default:
				}
			}
			before = true
		case connectivity.TransientFailure, connectivity.Idle:
			before = true
		}
		state = next
	}
}

// ResolveNow asks for a new list if the last attempt failed. The watch keeps
// a healthy list current by itself.
func (r *etcdResolver) ResolveNow(resolver.ResolveNowOptions) {
	select {
	case r.now <- struct{}{}:
	default:
	}
}

// Close stops the watch and waits for the resolver's goroutine to end.
func (r *etcdResolver) Close() {
	r.cancel()
	<-r.done
	<-r.connDone
}

func (r *etcdResolver) run() {
	defer close(r.done)
	defer func() {
		if r.grace != nil {
			r.grace.Stop()
		}
		if r.snapTimer != nil {
			r.snapTimer.Stop()
		}
		if r.retryT != nil {
			r.retryT.Stop()
		}
		if r.snapDirty {
			r.saveSnapshot()
		}
	}()
	needList, fails := true, 0
	for r.ctx.Err() == nil {
		if needList {
			if err := r.list(); err != nil {
				if r.ctx.Err() != nil {
					return
				}
				fails++
				r.listFailed(err, fails)
				r.wait(r.backoff(fails), false)
				continue
			}
			fails = 0
			if hookAfterList != nil {
				hookAfterList()
			}
		}
		relist, created, err := r.watch()
		if r.ctx.Err() != nil {
			return
		}
		r.emit(Event{Kind: EventWatchBroken, Err: err})
		if !created.IsZero() && time.Since(created) > r.b.opts.backoffMax {
			// A watch that ran a while was a success: back off from
			// the start. (One that breaks as soon as it is made keeps
			// backing off further.)
			fails = 0
		}
		needList = relist
		if !relist {
			fails++
			// A watch etcd cancelled for want of a leader is resumed
			// as soon as the member answers a linearizable read again
			// (it has a leader), not a backoff later.
			needList = r.wait(r.backoff(fails), errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, errWatchClosed))
		}
	}
}

func (r *etcdResolver) listFailed(err error, fails int) {
	r.emit(Event{Kind: EventListFailed, Err: err})
	if r.pushed {
		// The last list stays in force; if grpc refused it, grpc has
		// none it can use and hears why etcd gives no other.
		if r.refused > 0 {
			r.cc.ReportError(err)
		}
		return
	}
	if fails == 1 && r.loadSnapshot() {
		return
	}
	r.cc.ReportError(err)
}

// watch follows changes from r.rev+1 until the watch ends. It returns
// whether the list must be read again (history compacted, or etcd reset),
// and when etcd accepted the watch (zero if it never did).
func (r *etcdResolver) watch() (relist bool, created time.Time, err error) {
	r.lastTry = time.Now()
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(r.ctx))
	defer cancel()
	wch := r.b.cli.Watch(ctx, r.prefix, clientv3.WithPrefix(), clientv3.WithRev(r.rev+1),
		clientv3.WithCreatedNotify(), clientv3.WithProgressNotify())
	// Changes held back by the update interval go out when it ends, and
	// when the watch ends for any reason but Close.
	var heldT *time.Timer
	flush := func() {
		if heldT != nil {
			heldT.Stop()
			heldT = nil
		}
		if r.held > 0 {
			n := r.held
			r.held = 0
			pushed := r.pushChanged()
			if pushed {
				r.emit(Event{Kind: EventUpdated, Changes: n})
			}
			if hookFlushed != nil {
				hookFlushed(pushed)
			}
		}
	}
	defer func() {
		if r.ctx.Err() == nil {
			flush()
		} else if heldT != nil {
			heldT.Stop()
		}
	}()
	var graceC, snapC, heldC <-chan time.Time
	for {
		graceC, snapC, heldC = nil, nil, nil
		if heldT != nil {
			heldC = heldT.C
		}
		if r.grace != nil {
			graceC = r.grace.C
		}
		if r.snapTimer != nil {
			snapC = r.snapTimer.C
		}
		select {
		case <-r.ctx.Done():
			return false, created, r.ctx.Err()
		case <-r.retryC():
			// The list offered again, with any changes held since.
			n := r.retry()
			if heldT != nil {
				heldT.Stop()
				heldT = nil
			}
			if n > 0 {
				r.emit(Event{Kind: EventUpdated, Changes: n})
			}
		case <-graceC:
			r.endGrace()
			if r.held == 0 && heldT != nil { // endGrace pushed them
				heldT.Stop()
				heldT = nil
			}
		case <-snapC:
			r.snapTimer = nil
			r.saveSnapshot()
		case <-heldC:
			heldT = nil
			flush()
		case <-r.reconnected:
			// etcd may have lost its data while the client was away,
			// and this watch, resumed by the etcd client from the
			// revision it had reached, would follow another history
			// without a word: the list is read again and checked.
			return true, created, errReconnected
		case resp, ok := <-wch:
			if !ok {
				return false, created, errWatchClosed
			}
			if resp.Created && created.IsZero() {
				created = time.Now()
			}
			r.limited = 0
			changes, relist, err := r.apply(resp)
			// Coalesce: apply whatever else is already waiting, then push
			// once.
			for err == nil && !relist {
				select {
				case more, ok := <-wch:
					if !ok {
						err = errWatchClosed
						break
					}
					var n int
					n, relist, err = r.apply(more)
					changes += n
					continue
				default:
				}
				break
			}
			if r.limited > 0 {
				r.emit(Event{Kind: EventLimited, Changes: r.limited, Err: fmt.Errorf("discovery: %d registrations under %s left out: the resolver keeps %d instances (WithMaxInstances)",
					r.limited, r.prefix, r.b.opts.maxInstances)})
			}
			if changes > 0 {
				r.held += changes
				if wait := r.b.opts.updateInterval - time.Since(r.lastPush); wait <= 0 {
					flush()
				} else {
					if heldT == nil {
						heldT = time.NewTimer(wait)
					}
					if hookHeld != nil {
						hookHeld()
					}
				}
			}
			if err != nil || relist {
				return relist, created, err
			}
		}
	}
}

// errWatchClosed ends a watch whose channel the etcd client closed.
var errWatchClosed = errors.New("discovery: watch channel closed")

// errReconnected ends a watch when the etcd client has connected again.
var errReconnected = errors.New("discovery: connected to etcd again; reading the list again")

// checkSameEtcd asks etcd for the service's revision and reports an error if
// etcd has gone back in time or is another cluster, or cannot be asked (a
// re-list settles it): its data was lost, and the watch, resumed from a
// revision the new etcd has not reached, would wait silently.
func (r *etcdResolver) checkSameEtcd() error {
	ctx, cancel := context.WithTimeout(r.ctx, r.b.opts.requestTimeout)
	resp, err := r.b.cli.Get(ctx, r.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return fmt.Errorf("discovery: etcd behind the list's revision %d, and its revision could not be read: %w", r.rev, err)
	}
	if resp.Header.ClusterId != r.cluster || resp.Header.Revision < r.rev {
		return fmt.Errorf("discovery: etcd at revision %d (cluster %x), behind the list's %d (cluster %x)",
			resp.Header.Revision, resp.Header.ClusterId, r.rev, r.cluster)
	}
	return nil
}

// apply applies one watch response and returns how many instances changed,
// whether to list again, and the error that ended the watch, if any.
func (r *etcdResolver) apply(resp clientv3.WatchResponse) (changes int, relist bool, err error) {
	if err := resp.Err(); err != nil {
		if resp.CompactRevision > 0 || errors.Is(err, rpctypes.ErrCompacted) {
			return 0, true, fmt.Errorf("discovery: watch of %s from revision %d: %w", r.prefix, r.rev+1, err)
		}
		return 0, false, fmt.Errorf("discovery: watch of %s: %w", r.prefix, err)
	}
	if resp.Created {
		if resp.Header.ClusterId != r.cluster {
			return 0, true, fmt.Errorf("discovery: etcd is cluster %x, not the list's %x", resp.Header.ClusterId, r.cluster)
		}
		if resp.Header.Revision < r.rev {
			// Watching from a revision this member has not reached:
			// either etcd lost its data, or the member is a follower a
			// little behind the one the list was read from. A
			// linearizable read tells the two apart; a lagging member
			// catches up and the watch goes on.
			if err := r.checkSameEtcd(); err != nil {
				return 0, true, err
			}
		}
		return 0, false, nil
	}
	for _, ev := range resp.Events {
		key := string(ev.Kv.Key)
		switch ev.Type {
		case mvccpb.PUT:
			if r.put(key, ev.Kv.Value, ev.Kv.ModRevision, true) {
				changes++
			}
		case mvccpb.DELETE:
			if r.remove(key) {
				changes++
			}
		}
		r.rev = ev.Kv.ModRevision
	}
	if len(resp.Events) == 0 && resp.Header.Revision > r.rev {
		r.rev = resp.Header.Revision // progress notification
	}
	return changes, false, nil
}

// put records the instance at key, written at revision mod, returning
// whether the list changed. A value that does not parse removes the
// instance it replaces and is reported. With limit, a new instance beyond
// maxInstances is left out (counted in r.limited).
func (r *etcdResolver) put(key string, value []byte, mod int64, limit bool) bool {
	inst, err := r.decode(key, value)
	if err != nil {
		r.skipped(key, err)
		return r.remove(key)
	}
	return r.putInstance(key, inst, mod, limit)
}

// putInstance records inst, decoded from key's value, as put does.
func (r *etcdResolver) putInstance(key string, inst registry.Instance, mod int64, limit bool) bool {
	attr := &instanceAttr{inst: inst}
	if e, ok := r.entries[key]; ok {
		e.mod = mod
		if e.stale {
			e.stale = false
			r.stale--
		}
		if e.attr.Equal(attr) {
			return false
		}
		e.attr, e.ep = attr, endpointOf(attr)
		r.setDraining(e, inst.Metadata.Status == registry.StatusDraining)
		r.markDirty(e)
		r.maybePruneIntern()
		return true
	}
	if limit && len(r.entries) >= r.b.opts.maxInstances {
		r.leftOut++
		r.limited++
		return false
	}
	e := &entry{key: key, attr: attr, ep: endpointOf(attr), mod: mod}
	r.setDraining(e, inst.Metadata.Status == registry.StatusDraining)
	r.entries[key] = e
	r.markDirty(e)
	r.maybePruneIntern()
	return true
}

// skipped reports a value that was skipped; a list reports its first
// maxSkipEvents one by one and sums up the others at its end.
func (r *etcdResolver) skipped(key string, err error) {
	if r.listing {
		r.listSkips++
		if r.listSkips > maxSkipEvents {
			return
		}
	}
	r.emit(Event{Kind: EventSkipped, Key: key, Err: err})
}

func (r *etcdResolver) setDraining(e *entry, draining bool) {
	if e.draining != draining {
		e.draining = draining
		if draining {
			r.draining++
		} else {
			r.draining--
		}
	}
}

func (r *etcdResolver) remove(key string) bool {
	e, ok := r.entries[key]
	if !ok {
		return false
	}
	if e.stale {
		r.stale--
	}
	delete(r.entries, key)
	r.setDraining(e, false)
	e.gone = true
	r.markDirty(e)
	return true
}

func (r *etcdResolver) markDirty(e *entry) {
	if !e.dirty {
		e.dirty = true
		r.dirty = append(r.dirty, e)
	}
}

// endGrace drops the instances kept across an etcd reset that were not
// registered again.
func (r *etcdResolver) endGrace() {
	r.grace = nil
	n := 0
	for key, e := range r.entries {
		if e.stale {
			r.remove(key)
			n++
		}
	}
	if n > 0 {
		held := r.held // changes held by the update interval go out too
		r.push()
		r.emit(Event{Kind: EventUpdated, Changes: n + held})
	}
}

// decode reads the instance at key, with its metadata strings interned.
func (r *etcdResolver) decode(key string, value []byte) (registry.Instance, error) {
	inst, err := decodeInstance(r.prefix, r.service, r.b.opts.maxValueBytes, key, value)
	if err != nil {
		return registry.Instance{}, err
	}
	r.internInstance(&inst)
	return inst, nil
}

// decodeInstance reads the instance of service at key, under the
// service's key prefix, from a value of at most maxValue bytes. Its errors
// name the key and quote outside input by a bounded prefix only.
func decodeInstance(prefix, service string, maxValue int, key string, value []byte) (registry.Instance, error) {
	id, ok := strings.CutPrefix(key, prefix)
	if !ok {
		// Only a snapshot file can hold one: the watch is on the
		// service's prefix.
		return registry.Instance{}, fmt.Errorf("discovery: key %s is not an instance of %q", quote.Bounded(key), service)
	}
	if id == "" || strings.Contains(id, "/") {
		return registry.Instance{}, fmt.Errorf("discovery: key %s is not %s<id>", quote.Bounded(key), prefix)
	}
	if len(value) > maxValue {
		return registry.Instance{}, fmt.Errorf("discovery: instance %s: value of %d bytes is over the limit of %d (WithMaxValueBytes)",
			quote.Bounded(key), len(value), maxValue)
	}
	addr, md, err := registry.Decode(value)
	if err != nil {
		return registry.Instance{}, fmt.Errorf("discovery: instance %s: %w", quote.Bounded(key), quote.Err(err))
	}
	if err := hostport.Syntax(addr); err != nil {
		return registry.Instance{}, fmt.Errorf("discovery: instance %s: address %s: %w", quote.Bounded(key), quote.Bounded(addr), err)
	}
	if id == addr {
		id = addr // share one string
	}
	return registry.Instance{Service: service, ID: id, Addr: addr, Metadata: md}, nil
}

// push sends the list to grpc: every instance but the draining ones (all
// of them if every one is draining: better a draining instance than none)
// and those the filter rejects.
func (r *etcdResolver) push() {
	r.offered, _ = r.nextOffered()
	r.send()
}

// pushChanged pushes the list if the changes since the last push changed
// it (an instance registered and gone again within the update interval
// did not), or if it is the all-draining one, and reports whether it did.
func (r *etcdResolver) pushChanged() bool {
	next, changed := r.nextOffered()
	if !changed && len(next) > 0 && r.pushed {
		return false
	}
	r.offered = next
	r.send()
	return true
}

// send gives grpc the offered list, or the all-draining one.
func (r *etcdResolver) send() {
	eps := r.offered
	if len(eps) == 0 && r.draining > 0 {
		// Every instance the filter keeps is draining: offer them all,
		// in a list of its own (a walk over every entry, for as long as
		// this lasts).
		eps = nil
		for _, e := range r.sortedEntries() {
			if r.b.opts.filter == nil || r.b.opts.filter(e.attr.inst) {
				eps = append(eps, e.ep)
			}
		}
	}
	r.pushed, r.lastPush, r.held = true, time.Now(), 0
	state := resolver.State{Endpoints: eps}
	if r.b.opts.addresses && len(eps) > 0 {
		state.Addresses = make([]resolver.Address, len(eps))
		for i, ep := range eps {
			//lint:ignore SA1019 WithAddresses is for balancers built on balancer/base, which read only Addresses
			state.Addresses[i] = resolver.Address{Addr: ep.Addresses[0].Addr, BalancerAttributes: ep.Attributes}
		}
	}
	err := r.cc.UpdateState(state)
	if r.retryT != nil {
		r.retryT.Stop()
		r.retryT = nil
	}
	switch {
	case len(eps) == 0:
		r.refused = 0
		r.cc.ReportError(fmt.Errorf("discovery: no instances of service %q under %s", r.service, r.prefix))
	case err != nil:
		// grpc asks a resolver to try again with a backoff: the list
		// goes again when the backoff ends, or sooner with a change.
		r.refused++
		d := r.backoff(r.refused)
		r.retryT = time.NewTimer(d)
		r.emit(Event{Kind: EventRefused, Instances: len(eps), Err: fmt.Errorf("discovery: grpc refused the list of %d instances (offered again in %s): %w", len(eps), d.Round(time.Millisecond), err)})
	default:
		r.refused = 0
	}
	r.prepareSpare()
	if r.b.opts.snapshotDir != "" && r.cluster != 0 && r.refused == 0 {
		r.snapDirty = true
		if r.snapTimer == nil {
			r.snapTimer = time.NewTimer(r.b.opts.snapshotEvery)
		}
	}
}

// retryC is the channel of the refused list's retry timer, nil if none.
func (r *etcdResolver) retryC() <-chan time.Time {
	if r.retryT == nil {
		return nil
	}
	return r.retryT.C
}

// retry offers a refused list again, with the changes held since, and
// returns how many those were.
func (r *etcdResolver) retry() int {
	r.retryT = nil
	n := r.held
	r.push()
	return n
}

func (r *etcdResolver) backoff(n int) time.Duration {
	d := r.b.opts.backoffBase
	for i := 1; i < n && d < r.b.opts.backoffMax; i++ {
		d *= 2
	}
	d = min(d, r.b.opts.backoffMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func (r *etcdResolver) emit(ev Event) {
	ev.Time = time.Now()
	ev.Service = r.service
	ev.Revision = r.rev
	if ev.Instances == 0 {
		ev.Instances = len(r.entries)
	}
	lvl := slog.LevelDebug
	switch ev.Kind {
	case EventListFailed, EventWatchBroken, EventReset, EventSkipped, EventStale, EventRefused, EventLimited:
		lvl = slog.LevelWarn
	}
	r.b.opts.logger.LogAttrs(context.Background(), lvl, "discovery: "+ev.Kind.String(),
		slog.String("service", ev.Service), slog.Int("instances", ev.Instances), slog.Int64("rev", ev.Revision),
		slog.String("key", quote.Shown(ev.Key)), slog.Any("err", ev.Err))
	r.b.opts.onEvent(ev)
}
