package discovery

import (
	"log/slog"
	"time"

	"github.com/lodestar-rpc/lodestar/registry"
)

// Defaults for the options.
const (
	DefaultRequestTimeout = 3 * time.Second
	DefaultBackoffBase    = 100 * time.Millisecond
	DefaultBackoffMax     = 2 * time.Second
	DefaultResetGrace     = registry.DefaultTTL
	DefaultSnapshotEvery  = time.Second
	DefaultUpdateInterval = 20 * time.Millisecond

	// DefaultMaxInstances is the most instances a resolver keeps for one
	// target. Keys beyond it are left out (reported once per list, and
	// once per batch of watched changes, as EventLimited), never a crash
	// or an unbounded heap: a client holds about 500 B per instance.
	DefaultMaxInstances = 100_000
	// DefaultMaxValueBytes is the largest etcd value a resolver decodes.
	// A larger one is skipped (EventSkipped, naming its key) without being
	// parsed: a registrar writes a few hundred bytes per instance.
	DefaultMaxValueBytes = registry.MaxValueBytes
)

// defaultPageSize is how many keys one request of a list reads. etcd
// counts every key from a page's first to the end of the range for each
// page (its response's total count), so fewer, larger pages cost it less:
// 5,000 values of a few hundred bytes make a response of about 1.5 MB.
const defaultPageSize = 5000

// Option configures a Builder.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	prefix         string
	logger         *slog.Logger
	filter         func(registry.Instance) bool
	onEvent        func(Event)
	requestTimeout time.Duration
	backoffBase    time.Duration
	backoffMax     time.Duration
	resetGrace     time.Duration
	snapshotDir    string
	snapshotEvery  time.Duration
	updateInterval time.Duration
	addresses      bool
	maxInstances   int
	maxValueBytes  int
	pageSize       int
}

func defaultOptions() options {
	return options{
		prefix:         registry.DefaultPrefix,
		logger:         slog.New(slog.DiscardHandler),
		onEvent:        func(Event) {},
		requestTimeout: DefaultRequestTimeout,
		backoffBase:    DefaultBackoffBase,
		backoffMax:     DefaultBackoffMax,
		resetGrace:     DefaultResetGrace,
		snapshotEvery:  DefaultSnapshotEvery,
		updateInterval: DefaultUpdateInterval,
		maxInstances:   DefaultMaxInstances,
		maxValueBytes:  DefaultMaxValueBytes,
		pageSize:       defaultPageSize,
	}
}

// WithPrefix sets the key prefix instances are registered under (default
// registry.DefaultPrefix).
func WithPrefix(prefix string) Option {
	return optionFunc(func(o *options) { o.prefix = prefix })
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.logger = l
		}
	})
}

// WithFilter keeps only the instances for which keep returns true, e.g.
// one region's. It runs on the resolver's goroutine for each instance that
// changes, and must depend on the instance alone: an instance's verdict
// is not asked again until the instance changes.
func WithFilter(keep func(registry.Instance) bool) Option {
	return optionFunc(func(o *options) { o.filter = keep })
}

// WithEventHandler sets a function called on every Event, in order, from
// the resolver's goroutine. It must return quickly.
func WithEventHandler(f func(Event)) Option {
	return optionFunc(func(o *options) {
		if f != nil {
			o.onEvent = f
		}
	})
}

// WithRequestTimeout bounds each etcd request of a resolver (default 3 s).
// A list is read in pages of 5,000 keys, each a request of its own;
// once etcd has answered the first, a page that runs out of time is read
// again with twice the time, up to 8 times this bound, and half as many
// keys, so a large service on a slow etcd is still listed, without
// starting over.
func WithRequestTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.requestTimeout = d })
}

// WithBackoff sets the wait between failed attempts to list or watch: it
// starts at base, doubles up to max, and is jittered by ±20% (defaults
// 100 ms and 2 s).
func WithBackoff(base, max time.Duration) Option {
	return optionFunc(func(o *options) { o.backoffBase, o.backoffMax = base, max })
}

// WithResetGrace sets how long instances are kept after etcd comes back
// without its data (a wiped or replaced cluster), to give their registrars
// time to register them again (default registry.DefaultTTL). Without it a
// client would drop every instance the moment such an etcd answers.
func WithResetGrace(d time.Duration) Option {
	return optionFunc(func(o *options) { o.resetGrace = d })
}

// WithSnapshotDir makes each resolver save the last good list of its
// service to <dir>/<service>.json (at most once per second), and, when
// etcd cannot be reached at start, serve from that file until etcd
// answers. Instances served from the file are logged as stale.
func WithSnapshotDir(dir string) Option {
	return optionFunc(func(o *options) { o.snapshotDir = dir })
}

// WithUpdateInterval sets the least time between two lists the watch
// pushes to grpc (default 20 ms; 0 pushes every change at once). A change
// after a quiet spell is pushed at once; changes that follow within the
// interval are held and pushed together when it ends, or when the watch
// ends, whichever comes first, and not at all if they cancel out (an
// instance registered and gone again). A new list read from etcd (after
// compaction or a reset) is pushed at once. grpc's resolver API
// takes the whole list on each update, and its balancers walk all of it,
// so at thousands of instances a rolling restart (a deregistration and a
// registration per instance, each its own etcd event) would otherwise cost
// one full update per event.
func WithUpdateInterval(d time.Duration) Option {
	return optionFunc(func(o *options) { o.updateInterval = d })
}

// WithAddresses also fills resolver.State.Addresses, one address per
// instance offered, in the order of Endpoints, each carrying the instance
// in its BalancerAttributes (read it with AddressInstance). Balancers built
// on google.golang.org/grpc/balancer/base read only Addresses, and without
// this option find none; grpc's own policies and lodestar's read Endpoints
// and need none of it. It costs a second list per update (64 B per
// instance at 10,000 instances: 640 KiB). base keeps the address it first
// saw for each host:port, so such a balancer sees an instance's metadata
// as it was when its address appeared, and one connection for instances
// that share an address.
func WithAddresses() Option {
	return optionFunc(func(o *options) { o.addresses = true })
}

// WithMaxInstances sets the most instances a resolver keeps for its target
// (default DefaultMaxInstances). A list keeps the first n keys in key
// order and leaves the others out; a watched registration beyond n is left
// out too. Either is reported by one EventLimited saying how many were
// left out. An instance left out comes in when its key is written again
// while there is room, or at the next full list (after a reconnection to
// etcd, say).
func WithMaxInstances(n int) Option {
	return optionFunc(func(o *options) { o.maxInstances = n })
}

// WithMaxValueBytes sets the largest etcd value a resolver decodes
// (default DefaultMaxValueBytes); a larger one is skipped and reported as
// EventSkipped, naming its key.
func WithMaxValueBytes(n int) Option {
	return optionFunc(func(o *options) { o.maxValueBytes = n })
}

// withPageSize sets how many keys one request of a list reads (tests).
func withPageSize(n int) Option {
	return optionFunc(func(o *options) { o.pageSize = n })
}
