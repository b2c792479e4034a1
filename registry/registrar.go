package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lodestar-rpc/lodestar/internal/quote"
)

// Errors returned by a Registrar.
var (
	ErrClosed      = errors.New("registry: registrar closed")
	ErrDuplicateID = errors.New("registry: instance id already registered by this registrar")
	ErrNotFound    = errors.New("registry: no such instance in this registrar")
	// ErrValueTooLarge: the instance's value would be over MaxValueBytes.
	ErrValueTooLarge = errors.New("registry: instance value too large")
)

// PendingError is returned by Register and the update methods when their
// context ended before the change reached etcd. The change is kept: the
// registrar goes on writing it in the background, and Deregister gives it
// up.
type PendingError struct {
	Key     string
	LastErr error // why the last attempt failed (the step and etcd's answer or timeout), if one did
	Err     error // the context's error
}

func (e *PendingError) Error() string {
	s := fmt.Sprintf("registry: %s not yet written to etcd (kept, retrying in background): %v", e.Key, e.Err)
	if e.LastErr != nil {
		s += "; last attempt: " + e.LastErr.Error()
	}
	return s
}

func (e *PendingError) Unwrap() []error { return []error{e.Err, e.LastErr} }

// State is where a Registrar stands.
type State int

const (
	// StateIdle: nothing registered yet, no lease.
	StateIdle State = iota
	// StatePending: some change has not reached etcd yet.
	StatePending
	// StateRegistered: every instance is in etcd under a live lease.
	StateRegistered
	// StateClosed: Close or Orphan was called.
	StateClosed
)

func (s State) String() string {
	return [...]string{"idle", "pending", "registered", "closed"}[s]
}

// A Registrar keeps a set of instances registered in etcd under one lease
// that it keeps alive. When the lease is lost for any reason it grants a
// new one and puts every instance back, retrying with backoff for as long
// as it lives, and reports each step as an Event.
//
// All methods are safe for concurrent use.
type Registrar struct {
	cli  *clientv3.Client
	opts options
	ttl  int64 // seconds

	ctx    context.Context // cancelled by Close and Orphan
	cancel context.CancelFunc
	loopWG sync.WaitGroup // the run loop
	wg     sync.WaitGroup // key guards
	poke   chan struct{}  // 1-slot: wake the loop
	keyCh  chan keyEvent  // from guards to the loop

	mu        sync.Mutex
	entries   map[string]*entry  // by key
	deleting  map[string]error   // keys to delete, with the last error
	unsure    map[string]bool    // keys to delete whose writes etcd never confirmed
	lease     clientv3.LeaseID   // live lease, 0 when none
	oldLeases []clientv3.LeaseID // lost leases that etcd may still hold, with keys of ours
	state     State
	fatal     error         // why the registrar stopped working on its own, if it did
	changed   chan struct{} // closed and replaced whenever an entry or deletion settles
	guardSeq  uint64        // last guard token handed out

	closeOnce sync.Once
	closeErr  error
}

type entry struct {
	inst      Instance
	key       string
	val       string
	gen       uint64 // bumped on every change
	synced    uint64 // gen written under the live lease; 0 = not written
	err       error  // last write error
	rev       int64  // mod revision of the last write that etcd confirmed
	mayExist  bool   // a write may have reached etcd: Deregister must delete
	confirmed bool   // etcd confirmed a write of it
	refusals  int    // consecutive writes etcd refused

	repairs    int       // puts back after another writer, since lastRepair-repairQuiet
	lastRepair time.Time // when the last one was decided
	notBefore  time.Time // no write before then (a paced repair)

	guard       uint64             // token of the running key guard; 0 when none
	guardCancel context.CancelFunc // stops it
}

// New returns a Registrar that writes through cli. It does not contact etcd
// until the first Register. The caller keeps ownership of cli and must
// close it after the Registrar.
func New(cli *clientv3.Client, opts ...Option) (*Registrar, error) {
	if cli == nil {
		return nil, errors.New("registry: nil etcd client")
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt.apply(&o)
	}
	switch {
	case o.prefix == "" || strings.Trim(o.prefix, "/") == "":
		return nil, fmt.Errorf("registry: prefix %q: want a non-empty path such as %q", o.prefix, DefaultPrefix)
	case o.ttl < time.Second:
		return nil, fmt.Errorf("registry: TTL %s is below 1s", o.ttl)
	case o.requestTimeout <= 0 || o.closeTimeout <= 0:
		return nil, errors.New("registry: timeouts must be positive")
	case o.backoffBase <= 0 || o.backoffMax < o.backoffBase:
		return nil, fmt.Errorf("registry: backoff base %s, max %s: want 0 < base <= max", o.backoffBase, o.backoffMax)
	}
	o.prefix = strings.TrimRight(o.prefix, "/")
	r := &Registrar{
		cli:      cli,
		opts:     o,
		ttl:      int64((o.ttl + time.Second - 1) / time.Second),
		poke:     make(chan struct{}, 1),
		keyCh:    make(chan keyEvent, 16),
		entries:  make(map[string]*entry),
		deleting: make(map[string]error),
		unsure:   make(map[string]bool),
		changed:  make(chan struct{}),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.loopWG.Add(1)
	go r.run()
	return r, nil
}

// Register puts inst in etcd under the registrar's lease and returns its
// key once it is there. Instance fields are validated first; an invalid
// instance, or an id this registrar already holds, is refused with an
// error naming what is wrong.
//
// If ctx ends before etcd answers (etcd unreachable, say), Register returns
// a *PendingError and keeps the instance: it is written as soon as etcd
// answers. Call Deregister to give it up.
func (r *Registrar) Register(ctx context.Context, inst Instance) (string, error) {
	in, err := inst.normalize()
	if err != nil {
		return "", err
	}
	val, err := Encode(in.Addr, in.Metadata)
	if err != nil {
		return "", err
	}
	key := Key(r.opts.prefix, in.Service, in.ID)
	if err := checkSize(key, val); err != nil {
		return "", err
	}
	r.mu.Lock()
	if err := r.closedLocked(); err != nil {
		r.mu.Unlock()
		return "", err
	}
	if _, dup := r.entries[key]; dup {
		r.mu.Unlock()
		return "", fmt.Errorf("%w: service %q id %q (key %s)", ErrDuplicateID, in.Service, in.ID, key)
	}
	delete(r.deleting, key)
	delete(r.unsure, key)
	e := &entry{inst: in, key: key, val: string(val), gen: 1}
	r.entries[key] = e
	r.state = StatePending
	r.mu.Unlock()
	r.wake()
	return key, r.waitSynced(ctx, e, 1)
}

// Deregister deletes the instance from etcd and forgets it. If ctx ends
// first, the deletion goes on in the background and a *PendingError is
// returned. An instance whose writes etcd refused needs no delete, and one
// whose delete etcd refuses after writes it never confirmed is given up
// (any such write is under the registrar's lease and leaves with it).
func (r *Registrar) Deregister(ctx context.Context, service, id string) error {
	key := Key(r.opts.prefix, service, id)
	r.mu.Lock()
	if err := r.closedLocked(); err != nil {
		r.mu.Unlock()
		return err
	}
	e, ok := r.entries[key]
	if !ok {
		r.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, quote.Bounded(key))
	}
	delete(r.entries, key)
	e.stopGuard()
	if !e.mayExist {
		// Every write of it was refused, or none was sent: there is
		// nothing in etcd to delete.
		r.broadcastLocked()
		r.mu.Unlock()
		r.wake()
		return nil
	}
	r.deleting[key] = nil
	if !e.confirmed {
		r.unsure[key] = true
	}
	r.state = StatePending
	r.mu.Unlock()
	r.wake()
	for {
		r.mu.Lock()
		lastErr, pending := r.deleting[key]
		_, back := r.entries[key]
		closed := r.closedLocked()
		ch := r.changed
		r.mu.Unlock()
		switch {
		case !pending || back:
			return nil
		case closed != nil:
			return closed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return &PendingError{Key: key, LastErr: lastErr, Err: ctx.Err()}
		}
	}
}

// Update changes the metadata of a registered instance in place: the key
// keeps its lease and is never deleted, so watchers see one PUT. f gets a
// copy of the current metadata to modify; the result is validated before
// anything is written. If another update lands while f runs, f is called
// again on the newer metadata, so concurrent updates never undo each
// other; f must not call the Registrar.
func (r *Registrar) Update(ctx context.Context, service, id string, f func(*Metadata)) error {
	key := Key(r.opts.prefix, service, id)
	for {
		r.mu.Lock()
		if err := r.closedLocked(); err != nil {
			r.mu.Unlock()
			return err
		}
		e, ok := r.entries[key]
		if !ok {
			r.mu.Unlock()
			return fmt.Errorf("%w: %s", ErrNotFound, quote.Bounded(key))
		}
		addr, md, seen := e.inst.Addr, e.inst.Metadata, e.gen
		md.Labels = cloneLabels(md.Labels)
		r.mu.Unlock()

		f(&md)
		if err := md.validate(); err != nil {
			return fmt.Errorf("registry: update %s: %w", quote.Bounded(key), err)
		}
		md.Labels = cloneLabels(md.Labels)
		val, err := Encode(addr, md)
		if err != nil {
			return err
		}
		if err := checkSize(key, val); err != nil {
			return err
		}

		r.mu.Lock()
		if err := r.closedLocked(); err != nil {
			r.mu.Unlock()
			return err
		}
		if cur := r.entries[key]; cur != e {
			r.mu.Unlock()
			return fmt.Errorf("%w: %s (deregistered during update)", ErrNotFound, key)
		}
		if e.gen != seen { // another update landed meanwhile: apply f to it
			r.mu.Unlock()
			continue
		}
		e.inst.Metadata = md
		e.val = string(val)
		e.gen++
		gen := e.gen
		r.state = StatePending
		r.mu.Unlock()
		r.wake()
		return r.waitSynced(ctx, e, gen)
	}
}

// Drain marks the instance draining: clients stop sending it new calls.
func (r *Registrar) Drain(ctx context.Context, service, id string) error {
	return r.Update(ctx, service, id, func(m *Metadata) { m.Status = StatusDraining })
}

// Undrain marks the instance serving again.
func (r *Registrar) Undrain(ctx context.Context, service, id string) error {
	return r.Update(ctx, service, id, func(m *Metadata) { m.Status = StatusServing })
}

// SetWeight changes the instance's weight. 0 keeps it registered but asks
// balancers to send it no new calls.
func (r *Registrar) SetWeight(ctx context.Context, service, id string, weight int) error {
	return r.Update(ctx, service, id, func(m *Metadata) { m.Weight = weight })
}

// Instances returns the instances the registrar holds, sorted by key.
func (r *Registrar) Instances() []Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]string, 0, len(r.entries))
	for k := range r.entries {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]Instance, 0, len(keys))
	for _, k := range keys {
		in := r.entries[k].inst
		in.Metadata.Labels = cloneLabels(in.Metadata.Labels)
		out = append(out, in)
	}
	return out
}

// State returns where the registrar stands.
func (r *Registrar) State() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// Lease returns the live lease, or 0 while there is none.
func (r *Registrar) Lease() clientv3.LeaseID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lease
}

// Close removes every instance from etcd by revoking the registrar's lease
// (and any lost lease etcd may still hold), which deletes exactly the keys
// written under it, in one step, and never a key another registrar has
// since taken over. It is bounded by the close timeout (WithCloseTimeout):
// if etcd cannot be reached in time the keys expire with the lease within
// one TTL, and the error says so. Close is safe to call more than once;
// later calls return the first result. The event handler must not call it.
func (r *Registrar) Close() error {
	r.closeOnce.Do(func() {
		leases := r.stop()
		ctx, cancel := context.WithTimeout(r.cli.Ctx(), r.opts.closeTimeout)
		defer cancel()
		var errs []error
		for _, id := range leases {
			if _, err := r.cli.Revoke(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
				errs = append(errs, fmt.Errorf("revoke lease %x: %w", int64(id), err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			r.closeErr = fmt.Errorf("registry: close (keys expire with the lease within %ds): %w", r.ttl, err)
		}
		var lease clientv3.LeaseID
		if len(leases) > 0 {
			lease = leases[0]
		}
		r.emit(Event{Kind: EventClosed, Lease: lease, Err: r.closeErr})
	})
	return r.closeErr
}

// Orphan stops keeping the lease alive without deleting anything: the
// instances leave etcd when the lease expires, within one TTL, as if the
// process had died. Close after Orphan does nothing.
func (r *Registrar) Orphan() {
	r.closeOnce.Do(func() {
		leases := r.stop()
		var lease clientv3.LeaseID
		if len(leases) > 0 {
			lease = leases[0]
		}
		r.emit(Event{Kind: EventClosed, Lease: lease, Err: errors.New("registry: orphaned: lease left to expire")})
	})
}

// stop ends the background work, marks the registrar closed and returns the
// leases that may hold its keys, the live one first.
func (r *Registrar) stop() []clientv3.LeaseID {
	r.cancel()
	r.loopWG.Wait()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	var leases []clientv3.LeaseID
	if r.lease != 0 {
		leases = append(leases, r.lease)
	}
	leases = append(leases, r.oldLeases...)
	r.lease, r.oldLeases = 0, nil
	clear(r.entries)
	clear(r.deleting)
	clear(r.unsure)
	r.state = StateClosed
	r.broadcastLocked()
	return leases
}

// closedLocked returns why the registrar takes no more changes, or nil.
func (r *Registrar) closedLocked() error {
	switch {
	case r.fatal != nil:
		return r.fatal
	case r.state == StateClosed:
		return ErrClosed
	}
	return nil
}

func (e *entry) stopGuard() {
	if e.guardCancel != nil {
		e.guardCancel()
	}
	e.guard, e.guardCancel = 0, nil
}

func (r *Registrar) wake() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

func (r *Registrar) broadcastLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Registrar) waitSynced(ctx context.Context, e *entry, gen uint64) error {
	for {
		r.mu.Lock()
		cur, ok := r.entries[e.key]
		done := ok && cur == e && e.synced >= gen && r.lease != 0
		lastErr, closed, ch := e.err, r.closedLocked(), r.changed
		r.mu.Unlock()
		switch {
		case done:
			return nil
		case closed != nil:
			return closed
		case !ok || cur != e:
			return fmt.Errorf("%w: %s (deregistered while being written)", ErrNotFound, e.key)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return &PendingError{Key: e.key, LastErr: lastErr, Err: ctx.Err()}
		}
	}
}

func (r *Registrar) emit(ev Event) {
	ev.Time = time.Now()
	if ev.Instances == 0 {
		r.mu.Lock()
		ev.Instances = len(r.entries)
		r.mu.Unlock()
	}
	lvl := slog.LevelInfo
	switch ev.Kind {
	case EventLeaseLost, EventRetrying, EventKeyLost:
		lvl = slog.LevelWarn
	}
	r.opts.logger.LogAttrs(context.Background(), lvl, "registry: "+ev.Kind.String(),
		slog.String("lease", fmt.Sprintf("%x", int64(ev.Lease))), slog.Int("instances", ev.Instances),
		slog.String("key", ev.Key), slog.Duration("outage", ev.Outage), slog.Any("err", ev.Err))
	r.opts.onEvent(ev)
}

// checkSize refuses a value over MaxValueBytes.
func checkSize(key string, val []byte) error {
	if len(val) > MaxValueBytes {
		return fmt.Errorf("%w: %s: %d bytes, over the limit of %d (MaxValueBytes); shorten its labels or metadata",
			ErrValueTooLarge, key, len(val), MaxValueBytes)
	}
	return nil
}

func cloneLabels(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// backoff returns the wait before attempt n (1-based): base doubling up to
// max, jittered by ±20%.
func (r *Registrar) backoff(n int) time.Duration {
	d := r.opts.backoffBase
	for i := 1; i < n && d < r.opts.backoffMax; i++ {
		d *= 2
	}
	d = min(d, r.opts.backoffMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
