package registry

import (
	"log/slog"
	"time"
)

// Defaults for the options.
const (
	DefaultTTL            = 10 * time.Second
	DefaultRequestTimeout = 3 * time.Second
	DefaultCloseTimeout   = 5 * time.Second
	DefaultBackoffBase    = 100 * time.Millisecond
	DefaultBackoffMax     = time.Second
)

// Option configures a Registrar.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	prefix         string
	ttl            time.Duration
	requestTimeout time.Duration
	closeTimeout   time.Duration
	backoffBase    time.Duration
	backoffMax     time.Duration
	logger         *slog.Logger
	onEvent        func(Event)
}

func defaultOptions() options {
	return options{
		prefix:         DefaultPrefix,
		ttl:            DefaultTTL,
		requestTimeout: DefaultRequestTimeout,
		closeTimeout:   DefaultCloseTimeout,
		backoffBase:    DefaultBackoffBase,
		backoffMax:     DefaultBackoffMax,
		logger:         slog.New(slog.DiscardHandler),
		onEvent:        func(Event) {},
	}
}

// WithPrefix sets the key prefix (default DefaultPrefix). A namespace such
// as "/prod/services" is just another prefix.
func WithPrefix(prefix string) Option {
	return optionFunc(func(o *options) { o.prefix = prefix })
}

// WithTTL sets the lease TTL, rounded up to whole seconds (default 10 s).
// An instance whose process dies leaves etcd at most one TTL later.
func WithTTL(ttl time.Duration) Option {
	return optionFunc(func(o *options) { o.ttl = ttl })
}

// WithRequestTimeout bounds each etcd request at first (default 3 s). A
// request that times out is retried with backoff under a timeout doubled
// each time, up to 16 times d, and never under three times the slowest
// recent round trip to etcd, so a slow link delays registration instead
// of stopping it.
func WithRequestTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.requestTimeout = d })
}

// WithCloseTimeout bounds Close (default 5 s).
func WithCloseTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.closeTimeout = d })
}

// WithBackoff sets the wait between failed attempts: it starts at base,
// doubles up to max, and is jittered by ±20% (defaults 100 ms and 1 s).
func WithBackoff(base, max time.Duration) Option {
	return optionFunc(func(o *options) { o.backoffBase, o.backoffMax = base, max })
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.logger = l
		}
	})
}

// WithEventHandler sets a function called on every Event, in order, from
// the registrar's own goroutine (EventClosed: from the goroutine that
// called Close or Orphan). It must return quickly and must not call the
// Registrar's blocking methods, Close and Orphan included.
func WithEventHandler(f func(Event)) Option {
	return optionFunc(func(o *options) {
		if f != nil {
			o.onEvent = f
		}
	})
}
