// Package hostport checks "host:port" addresses that other processes must
// be able to dial.
package hostport

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Check reports why addr is not a dialable host:port, or nil. The host must
// be non-empty and not an unspecified address (0.0.0.0, ::), which a server
// may listen on but no client can dial; the port must be 1-65535.
func Check(addr string) error {
	if err := Syntax(addr); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(addr)
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		return fmt.Errorf("host %s is unspecified: clients cannot dial it; use a routable address", host)
	}
	return nil
}

// Syntax reports why addr is not of the form host:port with a non-empty
// host and a port in 1-65535, or nil.
func Syntax(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if host == "" {
		return errors.New("host is empty")
	}
	if strings.ContainsAny(host, " \t\r\n/") {
		return fmt.Errorf("host %q contains a space or a slash", host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a number in 1-65535", port)
	}
	return nil
}
