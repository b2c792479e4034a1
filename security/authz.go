package security

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/internal/quote"
)

// Identity is a peer's verified certificate identity.
type Identity struct {
	CommonName string   // subject common name, e.g. "order"
	DNSNames   []string // subject alternative names
	URIs       []string // e.g. SPIFFE ids
	Subject    string   // the whole subject, RFC 2253
}

// Names returns the common name and the DNS names: what a rule may match.
func (id Identity) Names() []string {
	out := make([]string, 0, 1+len(id.DNSNames))
	if id.CommonName != "" {
		out = append(out, id.CommonName)
	}
	return append(out, id.DNSNames...)
}

// PeerIdentity returns the verified identity of the peer of ctx (a
// server's call context), or false when the peer presented no verified
// certificate.
func PeerIdentity(ctx context.Context) (Identity, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Identity{}, false
	}
	return identityOf(info.State.VerifiedChains[0][0]), true
}

func identityOf(c *x509.Certificate) Identity {
	id := Identity{CommonName: c.Subject.CommonName, DNSNames: c.DNSNames, Subject: c.Subject.String()}
	for _, u := range c.URIs {
		id.URIs = append(id.URIs, (*url.URL)(u).String())
	}
	return id
}

// Authorizer decides whether the peer id may call method; its error is
// returned to the caller (PERMISSION_DENIED unless it carries a status).
type Authorizer func(ctx context.Context, method string, id Identity) error

// Allow returns an Authorizer from rules: method ("/pkg.Service/Method"),
// service ("/pkg.Service/*") or "*" → the names (certificate common name
// or DNS name) allowed to call it. The most specific rule applies; a
// method no rule covers is denied.
//
//	security.Allow(map[string][]string{"/inventory.Inventory/*": {"order"}})
func Allow(rules map[string][]string) (Authorizer, error) {
	allowed := make(map[string]map[string]bool, len(rules))
	for m, names := range rules {
		if m != "*" && (!strings.HasPrefix(m, "/") || strings.Count(m, "/") != 2 || strings.HasSuffix(m, "/")) {
			return nil, fmt.Errorf("security: allow rule %q: want \"/pkg.Service/Method\", \"/pkg.Service/*\" or \"*\"", m)
		}
		set := map[string]bool{}
		for _, n := range names {
			set[n] = true
		}
		allowed[strings.TrimSuffix(m, "*")] = set
	}
	return func(_ context.Context, method string, id Identity) error {
		set, ok := allowed[method]
		if !ok {
			if i := strings.LastIndexByte(method, '/'); i > 0 {
				set, ok = allowed[method[:i+1]]
			}
		}
		if !ok {
			set, ok = allowed[""]
		}
		if ok {
			for _, n := range id.Names() {
				if set[n] {
					return nil
				}
			}
		}
		who := id.CommonName
		if who == "" {
			who = id.Subject
		}
		return status.Errorf(codes.PermissionDenied, "security: %s may not call %s", quote.Bounded(who), quote.Bounded(method))
	}, nil
}

func authorize(ctx context.Context, a Authorizer, method string) error {
	id, ok := PeerIdentity(ctx)
	if !ok {
		return status.Errorf(codes.Unauthenticated, "security: %s needs a verified client certificate", quote.Bounded(method))
	}
	if err := a(ctx, method, id); err != nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		return status.Error(codes.PermissionDenied, err.Error())
	}
	return nil
}

// UnaryServerInterceptor checks every unary call with a. Health checks
// (grpc.health.v1) are let through, so that clients can tell the server
// is up before they are authorised for anything.
func UnaryServerInterceptor(a Authorizer) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, "/grpc.health.v1.Health/") {
			if err := authorize(ctx, a, info.FullMethod); err != nil {
				return nil, err
			}
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor checks every stream with a, health checks
// excepted.
func StreamServerInterceptor(a Authorizer) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !strings.HasPrefix(info.FullMethod, "/grpc.health.v1.Health/") {
			if err := authorize(ss.Context(), a, info.FullMethod); err != nil {
				return err
			}
		}
		return handler(srv, ss)
	}
}
