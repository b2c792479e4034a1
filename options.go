package lodestar

import (
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/lodestar-rpc/lodestar/discovery"
	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/lb/roundrobin"
	"github.com/lodestar-rpc/lodestar/registry"
	"github.com/lodestar-rpc/lodestar/resilience/breaker"
	"github.com/lodestar-rpc/lodestar/resilience/flow"
	"github.com/lodestar-rpc/lodestar/resilience/retry"
	"github.com/lodestar-rpc/lodestar/resilience/shed"
	"github.com/lodestar-rpc/lodestar/security"
)

// Connection limits of NewServer's grpc server. grpc's own defaults let
// one connection run any number of calls at once, give a connection 120 s
// to finish its handshake and keep an idle connection for ever. A
// grpc.MaxConcurrentStreams, grpc.ConnectionTimeout or grpc.KeepaliveParams
// passed with WithServerOptions replaces the matching default (a
// KeepaliveParams as a whole: its zero MaxConnectionIdle means never).
const (
	// DefaultMaxConcurrentStreams is how many calls one client connection
	// may run at once; a client's further calls wait for one to end (grpc
	// clients queue them, they do not fail).
	DefaultMaxConcurrentStreams = 1000
	// DefaultConnectionTimeout bounds a new connection's TLS handshake and
	// HTTP/2 preface: a connection silent for that long is closed.
	DefaultConnectionTimeout = 10 * time.Second
	// DefaultMaxConnectionIdle is how long a connection with no call (not
	// even a health watch) stays open; then the server sends GOAWAY and
	// the client reconnects when it needs to, without failing a call.
	DefaultMaxConnectionIdle = 5 * time.Minute
)

// Keepalive of Dial's connections. A client pinging a grpc-go server more
// often than the server's enforcement policy allows (by default at most
// one ping per 5 minutes, and none without a call in progress) is sent
// GOAWAY "too_many_pings" and cut off, so Dial's pings stay within that
// default: they are safe against any grpc server, lodestar's or not.
// Dead peers are noticed sooner at the TCP level, which no server polices:
// Dial's connections send TCP keepalive probes after 15 s of silence, and
// a connection whose probes or data the peer has not acknowledged for
// DefaultKeepaliveTimeout is closed (TCP_USER_TIMEOUT), so an instance
// whose host or network died leaves the balancer in about 20 s. A process
// that died leaves at once (its kernel closes the connection).
const (
	// DefaultKeepaliveTime is the silence after which a connection with a
	// call in progress is pinged (grpc-go servers' default minimum).
	DefaultKeepaliveTime = 5 * time.Minute
	// DefaultKeepaliveTimeout is how long a ping, a TCP keepalive probe or
	// data sent may go unanswered before the connection is closed.
	DefaultKeepaliveTimeout = 20 * time.Second
)

// DefaultKeepalive returns Dial's HTTP/2 keepalive: a ping after
// DefaultKeepaliveTime of silence during a call, none on a connection
// without calls (a grpc-go server by default counts each such ping as an
// offence however rare), the connection closed after
// DefaultKeepaliveTimeout without an answer.
func DefaultKeepalive() keepalive.ClientParameters {
	return keepalive.ClientParameters{Time: DefaultKeepaliveTime, Timeout: DefaultKeepaliveTimeout, PermitWithoutStream: false}
}

// Option configures NewServer and Dial. Options that only one of them uses
// are ignored by the other.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	etcd      etcdclient.Config
	cli       *clientv3.Client
	prefix    string
	logger    *slog.Logger
	ttl       time.Duration
	metadata  registry.Metadata
	id        string
	listen    string
	advertise string

	drainQuiet   time.Duration
	drainMax     time.Duration
	stopTimeout  time.Duration
	serverOpts   []grpc.ServerOption
	dialOpts     []grpc.DialOption
	balancer     string
	balancerCfg  any
	eject        *lb.OutlierEjection
	idempotent   []string
	autoIdem     bool
	maxAttempts  int
	healthCheck  bool
	waitForReady bool

	retry      retry.Config
	hedge      map[string]retry.Hedge
	breakerOn  bool
	breakers   []breaker.Option
	timeout    time.Duration
	timeouts   map[string]time.Duration
	flowRules  []flow.Rule
	shed       *shed.Config
	noRecovery bool
	loggerSet  bool // WithLogger was given
	tls        *security.Config
	authz      security.Authorizer

	maxStreams  uint32
	connTimeout time.Duration
	maxIdle     time.Duration
	keepalive   keepalive.ClientParameters
	resolver    []discovery.Option
}

func defaultConfig() config {
	return config{
		prefix:      registry.DefaultPrefix,
		logger:      slog.New(slog.DiscardHandler),
		ttl:         registry.DefaultTTL,
		listen:      "127.0.0.1:0",
		drainQuiet:  200 * time.Millisecond,
		drainMax:    5 * time.Second,
		stopTimeout: 10 * time.Second,
		balancer:    roundrobin.Name,
		autoIdem:    true,
		maxAttempts: 4,
		healthCheck: true,

		maxStreams:  DefaultMaxConcurrentStreams,
		connTimeout: DefaultConnectionTimeout,
		maxIdle:     DefaultMaxConnectionIdle,
		keepalive:   DefaultKeepalive(),
	}
}

// WithEtcdEndpoints sets the etcd client URLs (default
// etcdclient.DefaultEndpoint). lodestar creates the client and closes it
// with the server or connection.
func WithEtcdEndpoints(endpoints ...string) Option {
	return optionFunc(func(c *config) { c.etcd.Endpoints = endpoints })
}

// WithEtcdConfig sets the whole etcd client configuration (TLS, auth,
// timeouts).
func WithEtcdConfig(cfg etcdclient.Config) Option {
	return optionFunc(func(c *config) { c.etcd = cfg })
}

// WithEtcdClient uses cli, which the caller keeps and closes after the
// server or connection.
func WithEtcdClient(cli *clientv3.Client) Option {
	return optionFunc(func(c *config) { c.cli = cli })
}

// WithPrefix sets the etcd key prefix (default registry.DefaultPrefix).
func WithPrefix(prefix string) Option {
	return optionFunc(func(c *config) { c.prefix = prefix })
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) {
		if l != nil {
			c.logger, c.loggerSet = l, true
		}
	})
}

// WithTTL sets the registration lease TTL (server; default 10 s).
func WithTTL(ttl time.Duration) Option {
	return optionFunc(func(c *config) { c.ttl = ttl })
}

// WithMetadata sets the instance's metadata: version, region, zone,
// weight, labels (server).
func WithMetadata(md registry.Metadata) Option {
	return optionFunc(func(c *config) { c.metadata = md })
}

// WithInstanceID sets the instance id (server; default: the advertised
// address).
func WithInstanceID(id string) Option {
	return optionFunc(func(c *config) { c.id = id })
}

// WithListenAddress sets where the server listens (default
// "127.0.0.1:0", a free loopback port). To serve other machines, listen on
// a routable address, or on "0.0.0.0:port" together with
// WithAdvertiseAddress.
func WithListenAddress(addr string) Option {
	return optionFunc(func(c *config) { c.listen = addr })
}

// WithAdvertiseAddress sets the address registered in etcd, the one
// clients dial (server; default: the listening address).
func WithAdvertiseAddress(addr string) Option {
	return optionFunc(func(c *config) { c.advertise = addr })
}

// WithDrain sets how shutdown waits for clients to stop sending new calls
// after the instance is marked draining: until no new call has started for
// quiet, and at most max (server; defaults 200 ms and 5 s).
func WithDrain(quiet, max time.Duration) Option {
	return optionFunc(func(c *config) { c.drainQuiet, c.drainMax = quiet, max })
}

// WithStopTimeout bounds how long shutdown lets calls in flight finish
// before closing connections (server; default 10 s).
func WithStopTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.stopTimeout = d })
}

// WithServerOptions adds grpc server options (server). They apply after
// NewServer's own, so one setting what NewServer sets (connection limits,
// credentials, an UnknownServiceHandler) wins.
func WithServerOptions(opts ...grpc.ServerOption) Option {
	return optionFunc(func(c *config) { c.serverOpts = append(c.serverOpts, opts...) })
}

// WithDialOptions adds grpc dial options (client). They apply after
// Dial's own, so one setting what Dial sets (keepalive, the dialer,
// credentials) wins. grpc.WithContextDialer replaces Dial's TCP dialer and
// with it the TCP keepalive probes (see DefaultKeepaliveTimeout). Dial's
// dialer connects to instances directly, never through an HTTP proxy
// named by HTTPS_PROXY.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return optionFunc(func(c *config) { c.dialOpts = append(c.dialOpts, opts...) })
}

// WithBalancer sets the load-balancing policy by its registered name
// (client; default lodestar_round_robin, package lb/roundrobin). A
// lodestar policy must be imported for its name to be known; grpc's own
// names ("round_robin") work too, without ejection or retry steering.
func WithBalancer(name string) Option {
	return optionFunc(func(c *config) { c.balancer, c.balancerCfg = name, nil })
}

// WithBalancerConfig sets the load-balancing policy and its configuration
// (client): cfg is the policy's typed config (for example
// hash.Config{Header: "x-user-id"}) or anything that marshals to the JSON
// the policy parses. Dial reports a config the policy refuses.
func WithBalancerConfig(name string, cfg any) Option {
	return optionFunc(func(c *config) { c.balancer, c.balancerCfg = name, cfg })
}

// WithOutlierEjection sets how a lodestar balancer ejects failing
// instances (client; default lb.OutlierEjection's defaults: 5 failures in
// a row, 30 s growing to 5 min, at most 50% of instances); Disabled turns
// ejection off.
func WithOutlierEjection(o lb.OutlierEjection) Option {
	return optionFunc(func(c *config) { c.eject = &o })
}

// WithIdempotent declares methods ("package.Service/Method", or
// "package.Service/" for all of a service's methods) safe to retry on
// another instance when they fail with UNAVAILABLE (client). Methods whose
// proto declares idempotency_level NO_SIDE_EFFECTS or IDEMPOTENT are
// retried without being named here.
func WithIdempotent(methods ...string) Option {
	return optionFunc(func(c *config) { c.idempotent = append(c.idempotent, methods...) })
}

// WithoutProtoIdempotency stops Dial from reading idempotency_level from
// the proto descriptors linked into the program (client).
func WithoutProtoIdempotency() Option {
	return optionFunc(func(c *config) { c.autoIdem = false })
}

// WithMaxAttempts sets how many times an idempotent call is tried in all,
// 2-5 (client; default 4), each retry on another instance where there is
// one, within a budget of 20% of calls (WithRetry for the rest).
func WithMaxAttempts(n int) Option {
	return optionFunc(func(c *config) { c.maxAttempts = n })
}

// WithRetry sets the retry configuration beyond what the other options
// set (client): backoff, retried codes, budget. Its Idempotent and
// MaxAttempts fields are ignored: WithIdempotent, the protos' options and
// WithMaxAttempts set those.
func WithRetry(cfg retry.Config) Option {
	return optionFunc(func(c *config) { c.retry = cfg })
}

// WithHedging hedges calls of an idempotent method (client): when the
// first attempt has not answered after h's delay (fixed, or a quantile of
// recent latencies), a second goes to another instance, and the first
// answer wins.
func WithHedging(method string, h retry.Hedge) Option {
	return optionFunc(func(c *config) {
		if c.hedge == nil {
			c.hedge = map[string]retry.Hedge{}
		}
		c.hedge[method] = h
	})
}

// WithBreaker puts a circuit breaker per method in front of every call
// (client; off by default), configured by opts: ratios, fallbacks, state
// callbacks.
func WithBreaker(opts ...breaker.Option) Option {
	return optionFunc(func(c *config) { c.breakerOn, c.breakers = true, opts })
}

// WithTimeout sets the deadline of unary calls whose caller set none
// (client; by default they have none), for all methods (0: none) and per
// method ("/pkg.Service/Method" or "/pkg.Service/*"). A deadline has a
// price in grpc whoever sets it (timers on both sides, a header): about
// 10% of the throughput of the smallest calls, measured in
// resilience's benchmarks.
func WithTimeout(all time.Duration, perMethod map[string]time.Duration) Option {
	return optionFunc(func(c *config) { c.timeout, c.timeouts = all, perMethod })
}

// WithFlowRules limits calls per method on the server (server): QPS, with
// warm-up and a bounded wait, and concurrency; calls over a limit get
// RESOURCE_EXHAUSTED naming the rule. Server.FlowLimiter changes the rules
// while serving.
func WithFlowRules(rules ...flow.Rule) Option {
	return optionFunc(func(c *config) { c.flowRules = rules })
}

// WithShedding turns on adaptive shedding (server; off by default): while
// the process is over its CPU threshold, calls beyond what it has shown
// it can complete are rejected at once with RESOURCE_EXHAUSTED.
func WithShedding(cfg shed.Config) Option {
	return optionFunc(func(c *config) { c.shed = &cfg })
}

// WithoutRecovery lets a handler's panic crash the process (server); by
// default it becomes an INTERNAL error with the stack logged.
func WithoutRecovery() Option {
	return optionFunc(func(c *config) { c.noRecovery = true })
}

// WithTLS turns on TLS from PEM files that may be replaced while running
// (server and client). A server with cfg.CAFile requires client
// certificates signed by it (mutual TLS). A client verifies the server
// against cfg.CAFile and the service name (or cfg.ServerName), and
// presents its own certificate when cfg has one. Plaintext is never
// accepted where TLS is on.
func WithTLS(cfg security.Config) Option {
	return optionFunc(func(c *config) { c.tls = &cfg })
}

// WithAuthorization checks every call's verified client identity (server;
// needs WithTLS with a CAFile): a gets the certificate's names and the
// method, and its error is the caller's (PERMISSION_DENIED). Health checks
// are let through. security.Allow makes one from rules.
func WithAuthorization(a security.Authorizer) Option {
	return optionFunc(func(c *config) { c.authz = a })
}

// WithoutHealthCheck turns off grpc's client-side health checking (client;
// on by default: an instance whose health is NOT_SERVING gets no calls).
func WithoutHealthCheck() Option {
	return optionFunc(func(c *config) { c.healthCheck = false })
}

// WithWaitForReady makes Dial wait, bounded by its context, until a
// connection to an instance is ready (client).
func WithWaitForReady() Option {
	return optionFunc(func(c *config) { c.waitForReady = true })
}

// WithKeepalive sets the HTTP/2 keepalive pings of Dial's connections
// (client; default DefaultKeepalive). A zero Time or Timeout keeps the
// default. Shorter pings than a server permits get the connection cut
// (GOAWAY too_many_pings): lodestar servers permit one every 10 s, with or
// without calls; grpc-go servers by default one every 5 minutes during
// calls only. grpc pings at most every 10 s whatever is asked.
func WithKeepalive(p keepalive.ClientParameters) Option {
	return optionFunc(func(c *config) {
		if p.Time == 0 {
			p.Time = DefaultKeepaliveTime
		}
		if p.Timeout == 0 {
			p.Timeout = DefaultKeepaliveTimeout
		}
		c.keepalive = p
	})
}

// WithEtcdRequestTimeout bounds each request the resolver makes to etcd,
// such as listing a service's instances (client; default
// discovery.DefaultRequestTimeout). Raise it for a slow or distant etcd
// or a service with very many instances.
func WithEtcdRequestTimeout(d time.Duration) Option {
	return WithResolverOptions(discovery.WithRequestTimeout(d))
}

// WithResolverOptions passes options to the resolver Dial builds (client),
// after its own (prefix, logger), so these win: filters, events, backoff,
// a snapshot directory, limits. See package discovery.
func WithResolverOptions(opts ...discovery.Option) Option {
	return optionFunc(func(c *config) { c.resolver = append(c.resolver, opts...) })
}
