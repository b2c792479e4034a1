// Package etcdclient builds the etcd client that lodestar's registry and
// discovery expect: one that finds its way back to etcd quickly after an
// outage, notices a dead connection, and logs nothing unless asked.
//
// etcd's clientv3 leaves grpc's reconnect backoff at its defaults (1 s
// growing to 120 s), so after a long etcd outage a default client can take
// tens of seconds to reconnect. New caps that backoff near one second, which
// is what lets a registrar put its instances back within about a second of
// etcd answering again.
//
// A password never travels in plaintext unless asked: with Username set,
// New refuses an endpoint that is not TLS (http://, unix://, or host:port
// without Config.TLS) unless Config.AllowInsecureAuth says the network is
// trusted. Loopback is no exception: another user of the same machine can
// read loopback traffic no more easily than a remote one can, but a
// forwarded port or a proxy can carry it off the machine unseen, and the
// rule is simpler to trust without one.
//
// Keepalive: a connection whose peer stopped answering is closed after
// KeepAliveTime of silence plus KeepAliveTimeout for the ping's answer, so
// a watch or lease on a dead link moves to another endpoint within
// DefaultKeepAliveTime + DefaultKeepAliveTimeout (20 s) at worst. The
// timeout is long enough for a slow but alive link: an answer that takes
// up to 10 s (a 2-4 s round trip has a wide margin, retransmissions
// included) keeps the connection. grpc also uses KeepAliveTimeout as the
// socket's TCP_USER_TIMEOUT (how long sent data may stay unacknowledged),
// which a short timeout makes a second way to drop a slow link. etcd
// refuses pings more often than every 5 s (its grpc-keepalive-min-time),
// so KeepAliveTime stays above that.
//
// Any *clientv3.Client works with lodestar; this package only makes the
// recommended settings easy to get.
package etcdclient

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/lodestar-rpc/lodestar/internal/hostport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Defaults used by New when a Config field is zero.
const (
	DefaultDialTimeout          = 5 * time.Second
	DefaultKeepAliveTime        = 10 * time.Second
	DefaultKeepAliveTimeout     = 10 * time.Second
	DefaultReconnectBackoffMax  = time.Second
	DefaultReconnectBackoffBase = 100 * time.Millisecond
)

// DefaultEndpoint is the etcd a zero Config connects to.
const DefaultEndpoint = "http://127.0.0.1:2379"

// Config describes how to reach etcd. The zero value connects to a local
// etcd on DefaultEndpoint.
type Config struct {
	// Endpoints are etcd client URLs ("http://host:port") or host:port
	// pairs. Empty means DefaultEndpoint.
	Endpoints []string
	// DialTimeout bounds each connection attempt. Zero means
	// DefaultDialTimeout. New does not wait for etcd, except with a
	// username, when it fetches an auth token for up to DialTimeout.
	DialTimeout time.Duration
	// KeepAliveTime and KeepAliveTimeout set grpc keepalive pings so that a
	// connection that silently died is noticed: after KeepAliveTime without
	// a byte from etcd on a connection with a stream open (a watch, a lease
	// keepalive), a ping is sent, and the connection is closed if nothing
	// arrives within KeepAliveTimeout. Zero means the defaults (see the
	// package documentation for the choice); a negative KeepAliveTime
	// turns pings off. etcd answers pings more often than every 5 s with
	// GOAWAY, so KeepAliveTime should not be below that.
	KeepAliveTime    time.Duration
	KeepAliveTimeout time.Duration
	// ReconnectBackoffMax caps the wait between reconnect attempts. Zero
	// means DefaultReconnectBackoffMax.
	ReconnectBackoffMax time.Duration
	// Username and Password authenticate to etcd when its auth is on.
	// New refuses to send them over an endpoint without TLS unless
	// AllowInsecureAuth is set.
	Username, Password string
	// AllowInsecureAuth lets Username and Password (and the token etcd
	// gives for them) travel over plaintext endpoints: set it only on a
	// network where no one can read the traffic.
	AllowInsecureAuth bool
	// TLS, when set, is used for every connection to etcd.
	TLS *tls.Config
	// Logger receives etcd client logs. Nil discards them.
	Logger *zap.Logger
	// DialOptions are appended to the ones New sets.
	DialOptions []grpc.DialOption
}

// New returns a client for cfg. It validates the endpoints and returns
// without waiting for etcd (unless Username is set: see DialTimeout).
func New(cfg Config) (*clientv3.Client, error) {
	cc, err := cfg.clientConfig()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcdclient: %w", err)
	}
	return cli, nil
}

func (cfg Config) clientConfig() (clientv3.Config, error) {
	eps := cfg.Endpoints
	if len(eps) == 0 {
		eps = []string{DefaultEndpoint}
	}
	for _, ep := range eps {
		if err := checkEndpoint(ep); err != nil {
			return clientv3.Config{}, err
		}
	}
	if (cfg.Username == "") != (cfg.Password == "") {
		return clientv3.Config{}, errors.New("etcdclient: username and password must be given together")
	}
	dial := cfg.DialTimeout
	if dial <= 0 {
		dial = DefaultDialTimeout
	}
	kaTime, kaTimeout := cfg.KeepAliveTime, cfg.KeepAliveTimeout
	switch {
	case kaTime < 0:
		kaTime, kaTimeout = 0, 0
	case kaTime == 0:
		kaTime = DefaultKeepAliveTime
	}
	if kaTime > 0 && kaTimeout <= 0 {
		kaTimeout = DefaultKeepAliveTimeout
	}
	maxBackoff := cfg.ReconnectBackoffMax
	if maxBackoff <= 0 {
		maxBackoff = DefaultReconnectBackoffMax
	}
	base := min(DefaultReconnectBackoffBase, maxBackoff)
	logger := cfg.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	opts := []grpc.DialOption{
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  base,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   maxBackoff,
			},
			MinConnectTimeout: dial,
		}),
	}
	opts = append(opts, cfg.DialOptions...)
	if cfg.TLS != nil {
		// clientv3 would drop the TLS config for an http:// endpoint and
		// dial it in plaintext, credentials included.
		for _, ep := range eps {
			if strings.HasPrefix(ep, "http://") || strings.HasPrefix(ep, "unix://") {
				return clientv3.Config{}, fmt.Errorf("etcdclient: endpoint %q is plaintext but TLS is configured: use https:// (or unixs://)", ep)
			}
		}
	}
	if err := cfg.checkCredentials(eps); err != nil {
		return clientv3.Config{}, err
	}
	return clientv3.Config{
		Endpoints:            eps,
		DialTimeout:          dial,
		DialKeepAliveTime:    kaTime,
		DialKeepAliveTimeout: kaTimeout,
		Username:             cfg.Username,
		Password:             cfg.Password,
		TLS:                  cfg.TLS,
		Logger:               logger,
		DialOptions:          opts,
	}, nil
}

// checkEndpoint rejects endpoints that clientv3 would accept but never
// reach, so that a typo is reported at start rather than as a timeout.
func checkEndpoint(ep string) error {
	if strings.TrimSpace(ep) == "" {
		return errors.New("etcdclient: empty endpoint")
	}
	hp := ep
	if strings.Contains(ep, "://") {
		u, err := url.Parse(ep)
		if err != nil {
			return fmt.Errorf("etcdclient: endpoint %q: %w", ep, err)
		}
		switch u.Scheme {
		case "http", "https", "unix", "unixs":
		default:
			return fmt.Errorf("etcdclient: endpoint %q: scheme %q is not http, https, unix or unixs", ep, u.Scheme)
		}
		if u.Scheme == "unix" || u.Scheme == "unixs" {
			return nil
		}
		hp = u.Host
	}
	if err := hostport.Syntax(hp); err != nil {
		return fmt.Errorf("etcdclient: endpoint %q: %w", ep, err)
	}
	return nil
}
