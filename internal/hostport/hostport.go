// Package hostport checks "host:port" addresses that other processes must
// be able to dial.
//
// Its errors say what is wrong without repeating the address, which may be
// huge or hostile (read from etcd, say): the caller names the address once,
// with a bounded quote.
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
		return fmt.Errorf("host %s is unspecified: clients cannot dial it; use a routable address", ip.WithZone(""))
	}
	return nil
}

// Syntax reports why addr is not of the form host:port with a non-empty
// host and a port in 1-65535, or nil.
func Syntax(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			// AddrError's message holds the whole address.
			return fmt.Errorf("want host:port: %s", ae.Err)
		}
		return errors.New("want host:port")
	}
	if host == "" {
		return errors.New("host is empty")
	}
	if strings.ContainsAny(host, " \t\r\n/") {
		return errors.New("host contains a space or a slash")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return errors.New("port is not a number in 1-65535")
	}
	return nil
}
