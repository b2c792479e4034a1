// Package security gives gRPC servers and clients TLS and mutual TLS from
// PEM files that may be replaced while running: new connections use the
// new certificates, connections already open go on undisturbed.
//
//	creds, err := security.NewServer(security.Config{
//		CertFile: "server.pem", KeyFile: "server-key.pem", CAFile: "ca.pem"})
//	defer creds.Close()
//	grpc.NewServer(grpc.Creds(creds))
//
// A server with a CAFile requires every client to present a certificate
// signed by it (mutual TLS); without one it is plain TLS. A client always
// verifies the server against CAFile (or the system roots) and the server
// name, and presents its own certificate when it has one. TLS 1.2 is the
// minimum, with only forward-secret AEAD suites; TLS 1.3 when both sides
// have it.
//
// The files are read at once, so a missing or malformed file is an error
// naming it, and then watched by grpc's certificate provider
// (credentials/tls/certprovider/pemfile) every Refresh.
package security

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/tls/certprovider"
	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"

	"github.com/lodestar-rpc/lodestar/internal/tlsfiles"
)

// Config names the PEM files of one side.
type Config struct {
	// CertFile and KeyFile are this side's certificate (chain) and key.
	// A server needs them; a client needs them for mutual TLS.
	CertFile, KeyFile string
	// CAFile holds the certificates of the authorities trusted to sign
	// the peer's certificate. A server with one requires client
	// certificates; a client without one trusts the system roots.
	CAFile string
	// ServerName is the name a client expects in the server's
	// certificate (default: the host of the dial target, which for
	// lodestar:///<service> is the service name).
	ServerName string
	// Refresh is how often the files are checked for changes (default 1
	// minute).
	Refresh time.Duration
}

// Credentials are grpc transport credentials over watched files. Close
// stops the watching.
type Credentials struct {
	server     bool
	serverName string
	provider   certprovider.Provider
	hasRoots   bool
	hasCert    bool
}

var _ credentials.TransportCredentials = (*Credentials)(nil)

// NewServer returns server credentials; a missing or malformed file is an
// error naming it.
func NewServer(cfg Config) (*Credentials, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("security: a server needs a certificate and a key (CertFile, KeyFile)")
	}
	return newCredentials(cfg, true)
}

// NewClient returns client credentials; a missing or malformed file is an
// error naming it.
func NewClient(cfg Config) (*Credentials, error) {
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("security: a client certificate needs both CertFile and KeyFile")
	}
	return newCredentials(cfg, false)
}

func newCredentials(cfg Config, server bool) (*Credentials, error) {
	if cfg.Refresh == 0 {
		cfg.Refresh = time.Minute
	}
	if cfg.Refresh < 10*time.Millisecond {
		return nil, fmt.Errorf("security: refresh %v: want at least 10ms", cfg.Refresh)
	}
	if cfg.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile); err != nil {
			return nil, fmt.Errorf("security: certificate %s with key %s: %w", cfg.CertFile, cfg.KeyFile, err)
		}
	}
	if cfg.CAFile != "" {
		if _, err := tlsfiles.LoadPool(cfg.CAFile); err != nil {
			return nil, fmt.Errorf("security: %w", err)
		}
	}
	c := &Credentials{server: server, serverName: cfg.ServerName, hasRoots: cfg.CAFile != "", hasCert: cfg.CertFile != ""}
	if c.hasRoots || c.hasCert {
		p, err := pemfile.NewProvider(pemfile.Options{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, RootFile: cfg.CAFile, RefreshDuration: cfg.Refresh})
		if err != nil {
			return nil, fmt.Errorf("security: %w", err)
		}
		c.provider = p
	}
	return c, nil
}

// Close stops watching the files. It is safe to call twice.
func (c *Credentials) Close() {
	if c.provider != nil {
		c.provider.Close()
	}
}

// current returns a TLS config built from the files as they are now.
func (c *Credentials) current(ctx context.Context) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: tlsfiles.CipherSuites}
	if c.provider == nil {
		return cfg, nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	km, err := c.provider.KeyMaterial(ctx)
	if err != nil {
		return nil, fmt.Errorf("security: certificates not loaded: %w", err)
	}
	cfg.Certificates = km.Certs
	if c.server {
		if c.hasRoots {
			cfg.ClientCAs = km.Roots
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	} else {
		if c.hasRoots {
			cfg.RootCAs = km.Roots
		}
		// Present the certificate ourselves, so that a certificate the
		// server would refuse is refused here with the reason: under TLS
		// 1.3 the server's refusal reaches the client only as a closed
		// connection.
		certs := km.Certs
		cfg.Certificates = nil
		cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return c.clientCertificate(certs, cri)
		}
	}
	return cfg, nil
}

// clientCertificate returns the certificate to present when the server
// asks for one, or an error saying why the server would refuse it.
func (c *Credentials) clientCertificate(certs []tls.Certificate, cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if len(certs) == 0 {
		return nil, errors.New("security: the server requires a client certificate and none is configured (CertFile, KeyFile)")
	}
	cert := &certs[0]
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("security: our client certificate: %w", err)
		}
	}
	now := time.Now()
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("security: our client certificate %q expired at %s", leaf.Subject.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("security: our client certificate %q is not valid before %s", leaf.Subject.CommonName, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if len(cri.AcceptableCAs) > 0 {
		issuers := make([][]byte, 0, len(cert.Certificate))
		issuers = append(issuers, leaf.RawIssuer)
		for _, der := range cert.Certificate[1:] { // a chain: any of its issuers
			if ic, err := x509.ParseCertificate(der); err == nil {
				issuers = append(issuers, ic.RawIssuer, ic.RawSubject)
			}
		}
		for _, ca := range cri.AcceptableCAs {
			for _, is := range issuers {
				if bytes.Equal(ca, is) {
					return cert, nil
				}
			}
		}
		return nil, fmt.Errorf("security: the server trusts other certificate authorities than the one that signed our client certificate (%s)", leaf.Issuer)
	}
	return cert, nil
}

// ClientHandshake verifies the server with the current files.
func (c *Credentials) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cfg, err := c.current(ctx)
	if err != nil {
		return nil, nil, err
	}
	name := c.serverName
	if name == "" {
		name = authority
		if host, _, err := net.SplitHostPort(authority); err == nil {
			name = host
		}
	}
	cfg.ServerName = name
	return credentials.NewTLS(cfg).ClientHandshake(ctx, authority, conn)
}

// ServerHandshake presents the current certificate and, with a CA file,
// verifies the client's.
func (c *Credentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cfg, err := c.current(context.Background())
	if err != nil {
		return nil, nil, err
	}
	cfg.NextProtos = []string{"h2"}
	rec := &recordingConn{Conn: conn}
	tc := tls.Server(rec, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		var rhe tls.RecordHeaderError
		if errors.As(err, &rhe) && bytes.HasPrefix(rhe.RecordHeader[:], []byte("PRI *")) {
			// A gRPC client speaking plaintext HTTP/2: tell it why, in
			// its own protocol, before closing.
			refusePlaintext(conn, rec.seen)
		}
		conn.Close()
		return nil, nil, err
	}
	rec.done = true
	rec.seen = nil
	return tc, credentials.TLSInfo{
		State:          tc.ConnectionState(),
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
	}, nil
}

// recordingConn keeps what the TLS handshake reads, so that a plaintext
// client's bytes can be answered.
type recordingConn struct {
	net.Conn
	seen []byte
	done bool // handshake over: keep nothing more
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.done && len(c.seen) < 4096 {
		c.seen = append(c.seen, p[:n]...)
	}
	return n, err
}

// plaintextRefusal is the status a plaintext gRPC client gets.
const plaintextRefusal = "security: this server requires TLS; the client connected without it (configure TLS credentials)"

// refusePlaintext answers a plaintext HTTP/2 client in its own protocol:
// SETTINGS, then, to each call it starts, a response with status
// UNAVAILABLE saying that the server requires TLS, then GOAWAY. grpc
// clients put that message in the call's error.
func refusePlaintext(conn net.Conn, seen []byte) {
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	// The TLS handshake read some of what the client sent: the preface,
	// and maybe frames after it.
	r := io.MultiReader(bytes.NewReader(seen), conn)
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(r, preface); err != nil || string(preface) != http2.ClientPreface {
		return
	}
	fr := http2.NewFramer(conn, r)
	if fr.WriteSettings() != nil {
		return
	}
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			hbuf.Reset()
			for _, h := range [][2]string{{":status", "200"}, {"content-type", "application/grpc"}, {"grpc-status", "14"}, {"grpc-message", plaintextRefusal}} {
				enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
			}
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true})
			fr.WriteGoAway(f.StreamID, http2.ErrCodeNo, []byte(plaintextRefusal))
			io.Copy(io.Discard, conn) // until the client hangs up: closing first would reset the answer away
			return
		}
	}
}

// Info describes the protocol.
func (c *Credentials) Info() credentials.ProtocolInfo {
	//lint:ignore SA1019 the fields are still read by grpc and by callers of Info
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2", ServerName: c.serverName}
}

// Clone returns a copy sharing the watched files.
func (c *Credentials) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

// OverrideServerName sets the expected server name.
//
// Deprecated: set Config.ServerName; kept to satisfy grpc's interface.
func (c *Credentials) OverrideServerName(name string) error {
	c.serverName = name
	return nil
}
