package discovery

import (
	"errors"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/resolver"

	"github.com/lodestar-rpc/lodestar/registry"
)

// Scheme is the resolver scheme: a service is dialled as
// "lodestar:///<service>".
const Scheme = "lodestar"

// Target returns the dial target of service: "lodestar:///" + service.
func Target(service string) string { return Scheme + ":///" + service }

// Builder builds resolvers that read instances from etcd. Give it to one
// connection with grpc.WithResolvers(b), or to every connection with
// RegisterGlobal. One Builder serves any number of connections and
// services.
type Builder struct {
	cli  *clientv3.Client
	opts options
}

var _ resolver.Builder = (*Builder)(nil)

// NewBuilder returns a Builder reading through cli, which the caller keeps
// and closes after every connection using the Builder is closed.
func NewBuilder(cli *clientv3.Client, opts ...Option) (*Builder, error) {
	if cli == nil {
		return nil, errors.New("discovery: nil etcd client")
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt.apply(&o)
	}
	switch {
	case strings.Trim(o.prefix, "/") == "":
		return nil, fmt.Errorf("discovery: prefix %q: want a non-empty path such as %q", o.prefix, registry.DefaultPrefix)
	case o.requestTimeout <= 0:
		return nil, errors.New("discovery: request timeout must be positive")
	case o.backoffBase <= 0 || o.backoffMax < o.backoffBase:
		return nil, fmt.Errorf("discovery: backoff base %s, max %s: want 0 < base <= max", o.backoffBase, o.backoffMax)
	case o.resetGrace < 0:
		return nil, errors.New("discovery: reset grace must not be negative")
	case o.updateInterval < 0:
		return nil, fmt.Errorf("discovery: update interval %s must not be negative", o.updateInterval)
	case o.maxInstances < 1:
		return nil, fmt.Errorf("discovery: max instances %d: want at least 1", o.maxInstances)
	case o.maxValueBytes < 1:
		return nil, fmt.Errorf("discovery: max value bytes %d: want at least 1", o.maxValueBytes)
	case o.pageSize < 1:
		return nil, fmt.Errorf("discovery: page size %d: want at least 1", o.pageSize)
	}
	o.prefix = strings.TrimRight(o.prefix, "/")
	return &Builder{cli: cli, opts: o}, nil
}

// RegisterGlobal registers a Builder for cli under the "lodestar" scheme
// for every grpc.NewClient of the process. Like resolver.Register, call it
// during initialisation, before any connection is made.
func RegisterGlobal(cli *clientv3.Client, opts ...Option) (*Builder, error) {
	b, err := NewBuilder(cli, opts...)
	if err != nil {
		return nil, err
	}
	resolver.Register(b)
	return b, nil
}

// Scheme returns "lodestar".
func (b *Builder) Scheme() string { return Scheme }

// Build starts a resolver for target "lodestar:///<service>". It returns at
// once, whether or not etcd answers: listing and watching go on in the
// background until the connection closes the resolver.
func (b *Builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	if target.URL.Host != "" {
		return nil, fmt.Errorf("discovery: target %q names an authority (%q); want %s:///<service>", target.URL.String(), target.URL.Host, Scheme)
	}
	service := strings.TrimPrefix(target.URL.Path, "/")
	if service == "" {
		service = target.URL.Opaque
	}
	if err := registry.ValidateService(service); err != nil {
		return nil, fmt.Errorf("discovery: target %q: %w", target.URL.String(), err)
	}
	return newResolver(b, service, cc), nil
}
