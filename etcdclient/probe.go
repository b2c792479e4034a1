package etcdclient

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
)

// Probe connects to each of cfg's endpoints as a client from New would,
// a TCP (or unix socket) connection and then the TLS handshake, and
// returns nil as soon as one succeeds, or else an error saying why each
// failed (connection refused, a name that does not resolve, a
// certificate not trusted...). It sends nothing to etcd: a client's
// request that timed out says only "context deadline exceeded", and
// Probe tells why. ctx bounds it.
func Probe(ctx context.Context, cfg Config) error {
	eps := cfg.Endpoints
	if len(eps) == 0 {
		eps = []string{DefaultEndpoint}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() {
			errs[i] = probe(ctx, ep, cfg.TLS)
			if errs[i] == nil {
				cancel() // one answers: stop the others
			}
		})
	}
	wg.Wait()
	reasons := make([]string, 0, len(eps))
	for i, err := range errs {
		if err == nil {
			return nil
		}
		reasons = append(reasons, eps[i]+": "+err.Error())
	}
	return fmt.Errorf("etcdclient: no endpoint answers: %s", strings.Join(reasons, "; "))
}

// probe connects to ep, with a TLS handshake where a client would make
// one.
func probe(ctx context.Context, ep string, tc *tls.Config) error {
	network, addr, secure := "tcp", ep, tc != nil
	if strings.Contains(ep, "://") {
		u, err := url.Parse(ep)
		if err != nil {
			return err
		}
		switch u.Scheme {
		case "http":
			addr, secure = u.Host, false
		case "https":
			addr, secure = u.Host, true
		case "unix", "unixs":
			network, addr, secure = "unix", u.Host+u.Path, secure || u.Scheme == "unixs"
		}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if !secure {
		return nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if tc != nil {
		cfg = tc.Clone()
	}
	if cfg.ServerName == "" && network == "tcp" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	tconn := tls.Client(conn, cfg)
	if err := tconn.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	return nil
}
