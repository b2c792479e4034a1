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
// Any *clientv3.Client works with lodestar; this package only makes the
// recommended settings easy to get.
package etcdclient

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/lodestar-rpc/lodestar/internal/hostport"
	"github.com/lodestar-rpc/lodestar/internal/tlsfiles"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Defaults used by New when a Config field is zero.
const (
	DefaultDialTimeout          = 5 * time.Second
	DefaultKeepAliveTime        = 10 * time.Second
	DefaultKeepAliveTimeout     = 3 * time.Second
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
	// connection that silently died is noticed. Zero means the defaults;
	// a negative KeepAliveTime turns pings off.
	KeepAliveTime    time.Duration
	KeepAliveTimeout time.Duration
	// ReconnectBackoffMax caps the wait between reconnect attempts. Zero
	// means DefaultReconnectBackoffMax.
	ReconnectBackoffMax time.Duration
	// Username and Password authenticate to etcd when its auth is on.
	Username, Password string
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

// TLSFiles returns a TLS configuration for etcd from PEM files: caFile
// to verify etcd's certificate (empty: the system roots), and certFile
// and keyFile to present a client certificate (both empty: none). A
// missing or malformed file is an error naming it.
//
// The client certificate's files are read at each handshake (etcd
// clients make few) and parsed again when they have changed, so a rotated
// certificate (short-lived ones are renewed every few hours) is presented
// on the next connection, without a restart: a client whose certificate
// expired in memory would lose etcd at its next reconnect, and a
// registrar its instances with it. A pair that does not load (caught
// half-replaced, or removed) keeps the last good one, until that one has
// expired: then the handshake fails with the reason the files do not load.
// As with tls.Config.Certificates, no certificate is sent to a server
// that names authorities or signature schemes it does not fit. The CA
// file is read once.
func TLSFiles(certFile, keyFile, caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: tlsfiles.CipherSuites}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("etcdclient: a client certificate needs both a certificate and a key file")
	}
	if certFile != "" {
		kp := &keyPair{certFile: certFile, keyFile: keyFile}
		if err := kp.load(); err != nil {
			return nil, fmt.Errorf("etcdclient: certificate %s with key %s: %w", certFile, keyFile, err)
		}
		cfg.GetClientCertificate = kp.get
	}
	if caFile != "" {
		pool, err := tlsfiles.LoadPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("etcdclient: %w", err)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// keyPair serves a client certificate from its files, read again when
// their contents change.
type keyPair struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	certPEM []byte // the contents cert was made from
	keyPEM  []byte
}

// load reads the files and, if they differ from the last ones read, makes
// them the certificate. It returns why a changed pair does not load.
func (k *keyPair) load() error {
	certPEM, err := os.ReadFile(k.certFile)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(k.keyFile)
	if err != nil {
		return err
	}
	if k.cert != nil && bytes.Equal(certPEM, k.certPEM) && bytes.Equal(keyPEM, k.keyPEM) {
		return nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	if cert.Leaf == nil { // set by X509KeyPair unless GODEBUG x509keypairleaf=0
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return err
		}
	}
	k.cert, k.certPEM, k.keyPEM = &cert, certPEM, keyPEM
	return nil
}

// get is the tls.Config's GetClientCertificate: the files' certificate,
// or the last good one while they do not load and it has not expired.
func (k *keyPair) get(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.load(); err != nil && time.Now().After(k.cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("etcdclient: client certificate %s expired at %s, and %s with key %s does not load: %w",
			k.certFile, k.cert.Leaf.NotAfter.Format(time.RFC3339), k.certFile, k.keyFile, err)
	}
	if cri.SupportsCertificate(k.cert) != nil {
		return new(tls.Certificate), nil // none, as crypto/tls does with Certificates
	}
	return k.cert, nil
}
