package lodestar

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // client-side health checking
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/lodestar-rpc/lodestar/discovery"
	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/registry"
	"github.com/lodestar-rpc/lodestar/resilience/breaker"
	"github.com/lodestar-rpc/lodestar/resilience/deadline"
	"github.com/lodestar-rpc/lodestar/resilience/retry"
	"github.com/lodestar-rpc/lodestar/security"
)

// Conn is a client connection to every instance of one service. It is a
// *grpc.ClientConn (generated NewXClient functions take it) whose Close
// also closes the etcd client Dial created.
type Conn struct {
	*grpc.ClientConn
	cli   *clientv3.Client
	owns  bool
	creds *security.Credentials // nil without TLS
}

// Close closes the connection and, if Dial created it, the etcd client.
func (c *Conn) Close() error {
	err := c.ClientConn.Close()
	c.closeClient()
	return err
}

// Dial returns a connection to the service name, found through etcd
// ("lodestar:///<name>"), with defaults for production:
//
//   - round robin over the instances, ejecting those that fail 5 times
//     in a row (WithBalancer for another policy, WithOutlierEjection to
//     tune ejection);
//   - grpc client-side health checking: an instance NOT_SERVING gets no
//     calls;
//   - a dead instance noticed without a call failing: at once if its
//     process died, in about 20 s if its host or network did (TCP
//     keepalive), with HTTP/2 pings no grpc server refuses
//     (DefaultKeepaliveTime; WithKeepalive);
//   - methods declared idempotent (in their proto, or WithIdempotent) are
//     retried on another instance when they fail with UNAVAILABLE, up to 4
//     attempts, within the caller's deadline and a budget of 20% of calls.
//
// It does not wait for an instance unless WithWaitForReady is given, in
// which case ctx bounds the wait. Plaintext unless WithTLS.
func Dial(ctx context.Context, name string, opts ...Option) (*Conn, error) {
	if err := registry.ValidateService(name); err != nil {
		return nil, err
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	if cfg.maxAttempts < 2 || cfg.maxAttempts > 5 {
		return nil, fmt.Errorf("lodestar: max attempts %d: want 2-5", cfg.maxAttempts)
	}
	sc, err := serviceConfig(cfg)
	if err != nil {
		return nil, err
	}
	c := &Conn{cli: cfg.cli}
	if c.cli == nil {
		cli, err := etcdclient.New(cfg.etcd)
		if err != nil {
			return nil, err
		}
		c.cli, c.owns = cli, true
	}
	ropts := append([]discovery.Option{discovery.WithPrefix(cfg.prefix), discovery.WithLogger(cfg.logger)}, cfg.resolver...)
	b, err := discovery.NewBuilder(c.cli, ropts...)
	if err != nil {
		c.closeClient()
		return nil, err
	}
	ints, sints, err := clientInterceptors(cfg)
	if err != nil {
		c.closeClient()
		return nil, err
	}
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if cfg.tls != nil {
		if c.creds, err = security.NewClient(*cfg.tls); err != nil {
			c.closeClient()
			return nil, fmt.Errorf("lodestar: %w", err)
		}
		creds = c.creds
	}
	dopts := append([]grpc.DialOption{
		grpc.WithResolvers(b),
		grpc.WithChainUnaryInterceptor(ints...),
		grpc.WithChainStreamInterceptor(sints...),
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(sc),
		grpc.WithKeepaliveParams(cfg.keepalive),
		grpc.WithContextDialer(dialTCP),
	}, cfg.dialOpts...)
	c.ClientConn, err = grpc.NewClient(discovery.Target(name), dopts...)
	if err != nil {
		c.closeClient()
		return nil, fmt.Errorf("lodestar: dial %s: %w", name, err)
	}
	if cfg.waitForReady {
		c.Connect()
		for s := c.GetState(); s != connectivity.Ready; s = c.GetState() {
			if !c.WaitForStateChange(ctx, s) {
				err := fmt.Errorf("lodestar: no ready instance of %s: %w", name, ctx.Err())
				// Say why, if a call can tell: grpc fails it with the last
				// connection or health-check error.
				pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, perr := healthpb.NewHealthClient(c).Check(pctx, &healthpb.HealthCheckRequest{})
				cancel()
				if perr != nil && status.Code(perr) != codes.DeadlineExceeded {
					err = fmt.Errorf("lodestar: no ready instance of %s: %w (a call says: %v)", name, ctx.Err(), perr)
				}
				c.Close()
				return nil, err
			}
		}
	}
	return c, nil
}

// tcpDialer sends TCP keepalive probes after 15 s of silence, every 5 s.
// grpc sets TCP_USER_TIMEOUT to the keepalive timeout on the connection,
// so unanswered probes close it after that long: a dead host is noticed
// without HTTP/2 pings, which servers limit.
var tcpDialer = net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3}}

func dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	return tcpDialer.DialContext(ctx, "tcp", addr)
}

// closeClient releases what Dial made besides the grpc connection: the
// certificate watcher and the etcd client.
func (c *Conn) closeClient() {
	if c.creds != nil {
		c.creds.Close()
	}
	if c.owns {
		c.cli.Close()
	}
}

type methodName struct {
	Service string `json:"service"`
	Method  string `json:"method,omitempty"`
}

// serviceConfig builds the default service config: the balancer and
// health checking. Retries are the interceptors' (clientInterceptors).
func serviceConfig(cfg config) (string, error) {
	lbConfig := map[string]json.RawMessage{}
	if cfg.balancerCfg != nil {
		js, err := json.Marshal(cfg.balancerCfg)
		if err == nil {
			err = json.Unmarshal(js, &lbConfig)
		}
		if err != nil {
			return "", fmt.Errorf("lodestar: balancer %s config: want a JSON object: %v", cfg.balancer, err)
		}
	}
	if cfg.eject != nil {
		if !strings.HasPrefix(cfg.balancer, "lodestar_") {
			return "", fmt.Errorf("lodestar: outlier ejection needs a lodestar balancer, not %q", cfg.balancer)
		}
		js, err := json.Marshal(cfg.eject)
		if err != nil {
			return "", err
		}
		lbConfig[lb.EjectionField] = js
	}
	sc := map[string]any{
		"loadBalancingConfig": []any{map[string]any{cfg.balancer: lbConfig}},
	}
	if cfg.healthCheck {
		sc["healthCheckConfig"] = map[string]any{"serviceName": ""}
	}
	b, err := json.Marshal(sc)
	return string(b), err
}

// clientInterceptors returns the unary interceptors, outermost first:
// breaker (if on), default deadline, retries and hedging; and the stream
// ones: the breaker's (streams get no default deadline: many live long,
// and no retries: grpc retries those that never left).
func clientInterceptors(cfg config) ([]grpc.UnaryClientInterceptor, []grpc.StreamClientInterceptor, error) {
	var out []grpc.UnaryClientInterceptor
	var sout []grpc.StreamClientInterceptor
	if cfg.breakerOn {
		b, err := breaker.New(cfg.breakers...)
		if err != nil {
			return nil, nil, fmt.Errorf("lodestar: %w", err)
		}
		out = append(out, b.UnaryClientInterceptor())
		sout = append(sout, b.StreamClientInterceptor())
	}
	if cfg.timeout != 0 || len(cfg.timeouts) > 0 {
		d, err := deadline.New(cfg.timeout, cfg.timeouts)
		if err != nil {
			return nil, nil, fmt.Errorf("lodestar: %w", err)
		}
		out = append(out, d.UnaryClientInterceptor())
	}
	names, err := idempotentMethods(cfg)
	if err != nil {
		return nil, nil, err
	}
	exact, services := map[string]bool{}, map[string]bool{}
	for _, n := range names {
		if n.Method == "" {
			services["/"+n.Service+"/"] = true
		} else {
			exact["/"+n.Service+"/"+n.Method] = true
		}
	}
	rc := cfg.retry
	rc.MaxAttempts = cfg.maxAttempts
	rc.Hedge = cfg.hedge
	rc.Idempotent = func(method string) bool {
		if exact[method] {
			return true
		}
		i := strings.LastIndexByte(method, '/')
		return i > 0 && services[method[:i+1]]
	}
	r, err := retry.New(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("lodestar: %w", err)
	}
	return append(out, r.UnaryClientInterceptor()), sout, nil
}

// idempotentMethods lists the methods to retry: those named with
// WithIdempotent and, unless turned off, those whose proto options say
// NO_SIDE_EFFECTS or IDEMPOTENT.
func idempotentMethods(cfg config) ([]methodName, error) {
	seen := map[methodName]bool{}
	var out []methodName
	add := func(n methodName) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, m := range cfg.idempotent {
		svc, method, ok := strings.Cut(strings.TrimPrefix(m, "/"), "/")
		if !ok || svc == "" || strings.Contains(method, "/") {
			return nil, fmt.Errorf("lodestar: idempotent method %q: want \"package.Service/Method\" or \"package.Service/\"", m)
		}
		add(methodName{Service: svc, Method: method})
	}
	if cfg.autoIdem {
		protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
			svcs := fd.Services()
			for i := range svcs.Len() {
				sd := svcs.Get(i)
				ms := sd.Methods()
				for j := range ms.Len() {
					md := ms.Get(j)
					o, ok := md.Options().(*descriptorpb.MethodOptions)
					if !ok || o == nil {
						continue
					}
					switch o.GetIdempotencyLevel() {
					case descriptorpb.MethodOptions_NO_SIDE_EFFECTS, descriptorpb.MethodOptions_IDEMPOTENT:
						add(methodName{Service: string(sd.FullName()), Method: string(md.Name())})
					}
				}
			}
			return true
		})
	}
	slices.SortFunc(out, func(a, b methodName) int {
		return strings.Compare(a.Service+"/"+a.Method, b.Service+"/"+b.Method)
	})
	return out, nil
}
