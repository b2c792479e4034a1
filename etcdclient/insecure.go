package etcdclient

import (
	"fmt"
	"strings"
)

// checkCredentials refuses to send a password over an endpoint without
// TLS unless cfg.AllowInsecureAuth is set.
func (cfg Config) checkCredentials(eps []string) error {
	if cfg.Username == "" || cfg.AllowInsecureAuth {
		return nil
	}
	for _, ep := range eps {
		if plaintext(ep, cfg.TLS != nil) {
			return fmt.Errorf("etcdclient: refusing to send the password for user %q over plain %s; use https, or set AllowInsecureAuth (--insecure-auth) for a trusted network",
				cfg.Username, plainURL(ep))
		}
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
