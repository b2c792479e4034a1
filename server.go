package lodestar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/registry"
	"github.com/lodestar-rpc/lodestar/resilience/flow"
	"github.com/lodestar-rpc/lodestar/resilience/recovery"
	"github.com/lodestar-rpc/lodestar/resilience/shed"
	"github.com/lodestar-rpc/lodestar/security"
)

// Server is a gRPC server that registers itself in etcd once it listens,
// serves grpc.health.v1, drains itself when its health says NOT_SERVING,
// and shuts down without failing a call.
//
// Register services on it (it is a grpc.ServiceRegistrar) before Serve.
type Server struct {
	name string
	cfg  config
	cli  *clientv3.Client
	owns bool // cli was created here

	grpc   *grpc.Server
	health *health.Server
	reg    *registry.Registrar
	flow   *flow.Limiter
	shed   *shed.Shedder         // nil unless WithShedding
	creds  *security.Credentials // nil without TLS

	lastStart atomic.Int64 // unix nanos of the last call started (health excluded)

	// statusMu serialises health changes and their etcd writes with the
	// registration in Serve and with Shutdown.
	statusMu sync.Mutex
	statuses map[string]healthpb.HealthCheckResponse_ServingStatus
	drained  bool // registration (to be) marked draining
	closing  bool // Shutdown began: health no longer changes

	mu      sync.Mutex
	addr    string
	id      string
	ready   chan struct{}
	serving bool
	drainAt atomic.Int64 // unix nanos when Shutdown marked the instance draining

	shutdownOnce sync.Once
	shutdownErr  error
	served       chan struct{} // closed when grpc's Serve returned
}

var _ grpc.ServiceRegistrar = (*Server)(nil)

// NewServer returns a server for the service name (as clients dial it:
// "lodestar:///<name>"). Zero options give a server on a free loopback
// port registered in a local etcd (etcdclient.DefaultEndpoint).
//
// Its connections are limited (DefaultMaxConcurrentStreams,
// DefaultConnectionTimeout, DefaultMaxConnectionIdle) unless
// WithServerOptions says otherwise. With WithAuthorization, a call of a
// method the server does not have is authorised like any other before it
// is answered UNIMPLEMENTED, so methods cannot be found out by trying.
func NewServer(name string, opts ...Option) (*Server, error) {
	if err := registry.ValidateService(name); err != nil {
		return nil, err
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	if cfg.drainQuiet <= 0 || cfg.drainMax < cfg.drainQuiet || cfg.stopTimeout <= 0 {
		return nil, fmt.Errorf("lodestar: drain quiet %s, max %s, stop timeout %s: want 0 < quiet <= max and a positive stop timeout",
			cfg.drainQuiet, cfg.drainMax, cfg.stopTimeout)
	}
	s := &Server{name: name, cfg: cfg, statuses: map[string]healthpb.HealthCheckResponse_ServingStatus{},
		ready: make(chan struct{}), served: make(chan struct{})}
	unary := []grpc.UnaryServerInterceptor{s.trackUnary}
	stream := []grpc.StreamServerInterceptor{s.trackStream}
	if !cfg.noRecovery {
		// A panic is logged even without WithLogger: to slog's default.
		var rl *slog.Logger
		if cfg.loggerSet {
			rl = cfg.logger
		}
		unary = append(unary, recovery.UnaryServerInterceptor(rl))
		stream = append(stream, recovery.StreamServerInterceptor(rl))
	}
	if cfg.authz != nil {
		if cfg.tls == nil || cfg.tls.CAFile == "" {
			return nil, errors.New("lodestar: authorization needs mutual TLS (WithTLS with a CAFile)")
		}
		unary = append(unary, security.UnaryServerInterceptor(cfg.authz))
		stream = append(stream, security.StreamServerInterceptor(cfg.authz))
	}
	lim, err := flow.New(cfg.flowRules...)
	if err != nil {
		return nil, fmt.Errorf("lodestar: %w", err)
	}
	s.flow = lim
	if cfg.shed != nil {
		sc := *cfg.shed
		if sc.Exempt == nil {
			sc.Exempt = func(m string) bool { return strings.HasPrefix(m, "/grpc.health.v1.Health/") }
		}
		sh, err := shed.New(sc)
		if err != nil {
			return nil, fmt.Errorf("lodestar: %w", err)
		}
		s.shed = sh
		unary = append(unary, sh.UnaryServerInterceptor())
		stream = append(stream, sh.StreamServerInterceptor())
	}
	unary = append(unary, lim.UnaryServerInterceptor())
	stream = append(stream, lim.StreamServerInterceptor())
	var creds []grpc.ServerOption
	if cfg.tls != nil {
		c, err := security.NewServer(*cfg.tls)
		if err != nil {
			s.releaseShed()
			return nil, fmt.Errorf("lodestar: %w", err)
		}
		s.creds = c
		creds = append(creds, grpc.Creds(c))
	}
	s.cli = cfg.cli
	if s.cli == nil {
		cli, err := etcdclient.New(cfg.etcd)
		if err != nil {
			s.releaseShed()
			return nil, err
		}
		s.cli, s.owns = cli, true
	}
	reg, err := registry.New(s.cli, registry.WithPrefix(cfg.prefix), registry.WithTTL(cfg.ttl), registry.WithLogger(cfg.logger))
	if err != nil {
		s.closeClient()
		return nil, err
	}
	s.reg = reg
	sopts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		// Let clients ping often, idle connections included (WithKeepalive),
		// so that they may notice a dead server without a call failing.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(cfg.maxStreams),
		grpc.ConnectionTimeout(cfg.connTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: cfg.maxIdle}),
	}
	if cfg.authz != nil {
		// grpc runs no interceptor for a method it does not have, and
		// answers UNIMPLEMENTED to anyone: a caller could list the methods
		// by trying names. As a handler, the answer passes authorization
		// first.
		sopts = append(sopts, grpc.UnknownServiceHandler(security.UnknownMethodHandler(func() map[string]grpc.ServiceInfo {
			return s.grpc.GetServiceInfo()
		})))
	}
	// The caller's options last: grpc applies options in order, so theirs
	// replace the defaults above.
	sopts = append(append(sopts, creds...), cfg.serverOpts...)
	s.grpc = grpc.NewServer(sopts...)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	return s, nil
}

// RegisterService registers a gRPC service implementation, as on a
// *grpc.Server; generated RegisterXServer functions accept the Server.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(desc, impl)
}

// GRPC returns the underlying grpc server.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Registrar returns the registrar that holds the instance in etcd.
func (s *Server) Registrar() *registry.Registrar { return s.reg }

// Ready is closed once the server listens and its instance is registered
// (or, if etcd is unreachable, once the registration is pending).
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr returns the address registered in etcd, once Ready.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Serve listens, serves, registers the instance in etcd, and blocks until
// ctx ends, then shuts down gracefully (see Shutdown) and returns its
// result. It returns early with an error if it cannot listen or serve.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.claim(); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", s.cfg.listen)
	if err != nil {
		s.Stop()
		return fmt.Errorf("lodestar: listen on %s: %w", s.cfg.listen, err)
	}
	return s.serve(ctx, lis)
}

// ServeListener is Serve on a listener of the caller's.
func (s *Server) ServeListener(ctx context.Context, lis net.Listener) error {
	if err := s.claim(); err != nil {
		lis.Close()
		return err
	}
	return s.serve(ctx, lis)
}

// claim makes sure Serve runs once.
func (s *Server) claim() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serving {
		return errors.New("lodestar: Serve called twice")
	}
	s.serving = true
	return nil
}

func (s *Server) serve(ctx context.Context, lis net.Listener) error {
	addr := s.cfg.advertise
	if addr == "" {
		var err error
		if addr, err = advertised(lis.Addr().String()); err != nil {
			lis.Close()
			s.Stop()
			return err
		}
	}
	serveErr := make(chan error, 1)
	go func() {
		defer close(s.served)
		serveErr <- s.grpc.Serve(lis)
	}()
	// Statuses set before Serve stand; the others start SERVING. The
	// registration says draining if any is not SERVING.
	s.statusMu.Lock()
	locked := true
	unlock := func() {
		if locked {
			locked = false
			s.statusMu.Unlock()
		}
	}
	defer unlock()
	for _, svc := range append([]string{""}, serviceNames(s.grpc)...) {
		if _, set := s.statuses[svc]; !set {
			s.health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
		}
	}
	md := s.cfg.metadata
	if s.drained {
		md.Status = registry.StatusDraining
	}

	// Register only once listening: a client that finds us can connect.
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	key, err := s.reg.Register(rctx, registry.Instance{Service: s.name, ID: s.cfg.id, Addr: addr, Metadata: md})
	cancel()
	var pending *registry.PendingError
	switch {
	case errors.As(err, &pending):
		s.cfg.logger.Warn("lodestar: etcd unreachable; serving, registration pending", "service", s.name, "addr", addr, "err", err)
	case err != nil:
		s.Stop()
		<-s.served
		return err
	}
	_, id, _ := registry.ParseKey(s.cfg.prefix, key)
	s.mu.Lock()
	s.addr, s.id = addr, id
	s.mu.Unlock()
	unlock()
	close(s.ready)
	s.cfg.logger.Info("lodestar: serving", "service", s.name, "addr", addr, "key", key)

	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.drainMax+s.cfg.stopTimeout+5*time.Second)
		defer cancel()
		return s.Shutdown(sctx)
	case err := <-serveErr:
		s.Stop()
		if err != nil {
			return fmt.Errorf("lodestar: serve: %w", err)
		}
		return nil
	}
}

// advertised turns a listening address into one clients can dial: an
// unspecified host (0.0.0.0, ::) becomes this machine's first non-loopback
// address.
func advertised(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsUnspecified() {
		return listen, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("lodestar: listening on %s: cannot find an address to advertise: %w", listen, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return net.JoinHostPort(n.IP.String(), port), nil
		}
	}
	return "", fmt.Errorf("lodestar: listening on %s: no non-loopback address to advertise; use WithAdvertiseAddress", listen)
}

// SetServingStatus sets the health of one gRPC service ("" for the whole
// server). While any is NOT_SERVING the instance is marked draining in
// etcd, so clients send it no new calls; when all serve again it is
// undrained. It may be called before Serve; it does nothing once Shutdown
// has begun.
func (s *Server) SetServingStatus(ctx context.Context, service string, st healthpb.HealthCheckResponse_ServingStatus) error {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	if s.closing {
		return nil
	}
	s.health.SetServingStatus(service, st)
	s.statuses[service] = st
	drain := false
	for _, v := range s.statuses {
		if v != healthpb.HealthCheckResponse_SERVING {
			drain = true
		}
	}
	change := drain != s.drained
	s.drained = drain
	s.mu.Lock()
	id := s.id
	s.mu.Unlock()
	if !change || id == "" {
		return nil // Serve registers with the right status
	}
	if drain {
		return s.reg.Drain(ctx, s.name, id)
	}
	return s.reg.Undrain(ctx, s.name, id)
}

func serviceNames(g *grpc.Server) []string {
	var out []string
	for svc := range g.GetServiceInfo() {
		out = append(out, svc)
	}
	return out
}

// Shutdown stops the server without failing a call: it marks the instance
// draining in etcd and NOT_SERVING in health, waits until clients have
// stopped starting new calls (WithDrain), lets the calls in flight finish
// (GracefulStop, bounded by WithStopTimeout, then Stop), deregisters the
// instance and revokes its lease. It is safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() { s.shutdownErr = s.shutdown(ctx) })
	return s.shutdownErr
}

func (s *Server) shutdown(ctx context.Context) error {
	var errs []error
	s.statusMu.Lock()
	s.closing = true
	s.drained = true
	s.statusMu.Unlock()
	s.mu.Lock()
	id := s.id
	s.mu.Unlock()
	s.health.Shutdown() // every service NOT_SERVING: health-checking clients stop picking us
	if id != "" {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := s.reg.Drain(dctx, s.name, id); err != nil {
			errs = append(errs, fmt.Errorf("drain: %w", err))
		}
		cancel()
		s.drainAt.Store(time.Now().UnixNano())
		s.waitQuiet(ctx)
	}
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	t := time.NewTimer(s.cfg.stopTimeout)
	select {
	case <-stopped:
	case <-t.C:
		errs = append(errs, fmt.Errorf("calls still running after %s: stopped", s.cfg.stopTimeout))
		s.grpc.Stop()
		<-stopped
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("calls cut short: %w", ctx.Err()))
		s.grpc.Stop()
		<-stopped
	}
	t.Stop()
	if err := s.reg.Close(); err != nil {
		errs = append(errs, err)
	}
	s.closeClient()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lodestar: shutdown of %s: %w", s.name, err)
	}
	return nil
}

// waitQuiet waits until no call has started for the quiet period, counted
// from the drain at the earliest, and at most the drain maximum.
func (s *Server) waitQuiet(ctx context.Context) {
	deadline := time.NewTimer(s.cfg.drainMax)
	defer deadline.Stop()
	for {
		since := time.Since(time.Unix(0, max(s.lastStart.Load(), s.drainAt.Load())))
		if since >= s.cfg.drainQuiet {
			return
		}
		t := time.NewTimer(s.cfg.drainQuiet - since)
		select {
		case <-t.C:
		case <-deadline.C:
			t.Stop()
			return
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// Stop stops the server at once: connections closed, calls in flight
// failed, the instance left to expire from etcd with its lease. For
// crashes in tests and emergencies; Shutdown is the graceful way.
// Stop also cuts short a Shutdown in progress.
func (s *Server) Stop() {
	s.grpc.Stop()
	s.shutdownOnce.Do(func() {
		s.reg.Orphan()
		s.closeClient()
	})
}

// closeClient releases what the server holds besides the registrar: the
// shedder's sampler and the etcd client, if the server made it.
func (s *Server) closeClient() {
	s.releaseShed()
	if s.owns {
		s.cli.Close()
	}
}

func (s *Server) releaseShed() {
	if s.shed != nil {
		s.shed.Close()
	}
	if s.creds != nil {
		s.creds.Close()
	}
}

// FlowLimiter returns the server's flow limiter, whose rules Update
// replaces while serving.
func (s *Server) FlowLimiter() *flow.Limiter { return s.flow }

func (s *Server) trackUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if !strings.HasPrefix(info.FullMethod, "/grpc.health.v1.") {
		s.lastStart.Store(time.Now().UnixNano())
	}
	return h(ctx, req)
}

func (s *Server) trackStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if !strings.HasPrefix(info.FullMethod, "/grpc.health.v1.") {
		s.lastStart.Store(time.Now().UnixNano())
	}
	return h(srv, ss)
}

// ServeUntilSignal is Serve until the process receives SIGINT or SIGTERM,
// then a graceful Shutdown: the usual main of a service.
//
//	func main() {
//		s, err := lodestar.NewServer("user", lodestar.WithEtcdEndpoints(endpoints...))
//		if err != nil {
//			log.Fatal(err)
//		}
//		userpb.RegisterUserServiceServer(s, &users{})
//		if err := s.ServeUntilSignal(); err != nil {
//			log.Fatal(err)
//		}
//	}
//
// A second signal during the shutdown ends the process at once, as without
// a handler.
func (s *Server) ServeUntilSignal() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // the next signal gets the default behaviour
	}()
	return s.Serve(ctx)
}
