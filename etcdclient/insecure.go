package etcdclient

import (
	"fmt"
	"strings"

	"github.com/lodestar-rpc/lodestar/internal/quote"
)

// checkCredentials refuses to send a password over an endpoint without
// TLS unless cfg.AllowInsecureAuth is set.
func (cfg Config) checkCredentials(eps []string) error {
	if cfg.Username == "" || cfg.AllowInsecureAuth {
		return nil
	}
	if plain := PlaintextEndpoints(Config{Endpoints: eps, TLS: cfg.TLS}); len(plain) > 0 {
		return fmt.Errorf("etcdclient: refusing to send the password for user %s over plain %s; use https, or set AllowInsecureAuth (--insecure-auth) for a trusted network",
			quote.Bounded(cfg.Username), plain[0])
	}
	return nil
}

// plaintext reports whether clientv3 dials ep without TLS: http:// always
// (it drops the TLS configuration), unix:// and a bare host:port unless
// TLS is configured.
func plaintext(ep string, withTLS bool) bool {
	switch {
	case strings.HasPrefix(ep, "https://"), strings.HasPrefix(ep, "unixs://"):
		return false
	case strings.HasPrefix(ep, "http://"):
		return true
	default:
		return !withTLS
	}
}

// plainURL names ep as the plaintext URL it is dialled as.
func plainURL(ep string) string {
	if strings.Contains(ep, "://") {
		return ep
	}
	return "http://" + ep
}

// PlaintextEndpoints returns the endpoints of cfg (DefaultEndpoint when
// none) that a client from New reaches without TLS. A program sending a
// secret in a request (a new user's password) checks it is empty, as New
// does for cfg's own password.
func PlaintextEndpoints(cfg Config) []string {
	eps := cfg.Endpoints
	if len(eps) == 0 {
		eps = []string{DefaultEndpoint}
	}
	var plain []string
	for _, ep := range eps {
		if plaintext(ep, cfg.TLS != nil) {
			plain = append(plain, plainURL(ep))
		}
	}
	return plain
}

// String describes cfg with the password left out, so that printing a
// Config (%v, a log line) never shows it.
func (cfg Config) String() string {
	pw := ""
	if cfg.Password != "" {
		pw = "(set)"
	}
	return fmt.Sprintf("{Endpoints:%v Username:%s Password:%s AllowInsecureAuth:%t TLS:%t DialTimeout:%s KeepAliveTime:%s KeepAliveTimeout:%s}",
		cfg.Endpoints, quote.Bounded(cfg.Username), pw, cfg.AllowInsecureAuth, cfg.TLS != nil, cfg.DialTimeout, cfg.KeepAliveTime, cfg.KeepAliveTimeout)
}

// GoString is String, for %#v.
func (cfg Config) GoString() string { return cfg.String() }
