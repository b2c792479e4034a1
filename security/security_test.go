package security_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
	"github.com/lodestar-rpc/lodestar/security"
	"github.com/lodestar-rpc/lodestar/security/devcert"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

// pki is a test PKI in a temporary directory.
type pki struct {
	t   *testing.T
	dir string
	ca  *devcert.CA
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	ca, err := devcert.NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return &pki{t: t, dir: dir, ca: ca}
}

func (p *pki) caFile() string { return filepath.Join(p.dir, "ca.pem") }

// issue writes a certificate and key named name and returns their paths.
func (p *pki) issue(name string, req devcert.Request) (string, string) {
	p.t.Helper()
	c, k, err := p.ca.Issue(req)
	if err != nil {
		p.t.Fatal(err)
	}
	cf, kf, err := devcert.WriteFiles(p.dir, name, c, k)
	if err != nil {
		p.t.Fatal(err)
	}
	return cf, kf
}

var loopback = []net.IP{net.ParseIP("127.0.0.1")}

// serve starts a health server with mTLS from p.
func serve(t *testing.T, p *pki, refresh time.Duration) (*testserver.Server, string, string) {
	t.Helper()
	cf, kf := p.issue("server", devcert.Request{CommonName: "user", DNSNames: []string{"user"}, IPs: loopback, Server: true})
	creds, err := security.NewServer(security.Config{CertFile: cf, KeyFile: kf, CAFile: p.caFile(), Refresh: refresh})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(creds.Close)
	return testserver.StartWith(t, grpc.Creds(creds)), cf, kf
}

// call dials addr with cfg and makes one call.
func call(t *testing.T, addr string, cfg security.Config) error {
	t.Helper()
	creds, err := security.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer creds.Close()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return testserver.Call(ctx, conn)
}

func TestMutualTLSAndEachRejection(t *testing.T) {
	p := newPKI(t, "lodestar test CA")
	other := newPKI(t, "another CA")
	srv, _, _ := serve(t, p, time.Minute)
	cf, kf := p.issue("order", devcert.Request{CommonName: "order", Client: true})
	ocf, okf := other.issue("order", devcert.Request{CommonName: "order", Client: true})
	ecf, ekf := p.issue("expired", devcert.Request{CommonName: "order", Client: true,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})

	if err := call(t, srv.Addr, security.Config{CertFile: cf, KeyFile: kf, CAFile: p.caFile()}); err != nil {
		t.Fatalf("mTLS call: %v", err)
	}
	for _, c := range []struct {
		name string
		cfg  security.Config
		want string
	}{
		{"no client certificate", security.Config{CAFile: p.caFile()}, "the server requires a client certificate and none is configured"},
		{"certificate from another CA", security.Config{CertFile: ocf, KeyFile: okf, CAFile: p.caFile()}, "the server trusts other certificate authorities than the one that signed our client certificate (CN=another CA"},
		{"expired certificate", security.Config{CertFile: ecf, KeyFile: ekf, CAFile: p.caFile()}, `expired at`},
		{"wrong server name", security.Config{CertFile: cf, KeyFile: kf, CAFile: p.caFile(), ServerName: "inventory"}, "certificate is valid for user, not inventory"},
		{"server not trusted", security.Config{CertFile: cf, KeyFile: kf, CAFile: other.caFile()}, "certificate signed by unknown authority"},
	} {
		err := call(t, srv.Addr, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.want)
		}
	}
	if n := srv.Calls(); n != 1 {
		t.Errorf("%d calls reached the handler, want only the mTLS one", n)
	}

	// The server's own check, with a client that does not check itself:
	// plain TLS credentials presenting a certificate from another CA, an
	// expired one, or none.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(p.ca.CertPEM)
	for name, files := range map[string][2]string{"another CA": {ocf, okf}, "expired": {ecf, ekf}, "none": {}} {
		cfg := &tls.Config{RootCAs: roots, ServerName: "user", MinVersion: tls.VersionTLS12}
		if files[0] != "" {
			cert, err := tls.LoadX509KeyPair(files[0], files[1])
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		conn, err := grpc.NewClient("passthrough:///"+srv.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = testserver.Call(ctx, conn)
		cancel()
		conn.Close()
		if err == nil {
			t.Errorf("server accepted a client certificate: %s", name)
		}
	}
	if n := srv.Calls(); n != 1 {
		t.Errorf("%d calls reached the handler after the server's own checks, want 1", n)
	}
}

// A plaintext client against a TLS server fails with an error that says
// the server requires TLS (which only the server's refusal carries: a
// call that timed out or found the connection closed would not say it),
// well before the call's deadline: no silent downgrade.
func TestPlaintextClientRejected(t *testing.T) {
	p := newPKI(t, "lodestar test CA")
	srv, _, _ := serve(t, p, time.Minute)
	conn, err := grpc.NewClient("passthrough:///"+srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = testserver.Call(ctx, conn)
	if err == nil || status.Code(err) == codes.DeadlineExceeded {
		t.Fatalf("plaintext call: %v", err)
	}
	t.Logf("plaintext client: %v", err)
	if !strings.Contains(err.Error(), "this server requires TLS") {
		t.Errorf("plaintext client's error does not say why: %v", err)
	}
	if srv.Calls() != 0 {
		t.Error("a plaintext call reached the handler")
	}
}

// Replaced files: new connections use the new server certificate, and a
// stream opened before keeps working.
func TestRotation(t *testing.T) {
	p := newPKI(t, "lodestar test CA")
	srv, scf, skf := serve(t, p, 20*time.Millisecond)
	cf, kf := p.issue("order", devcert.Request{CommonName: "order", Client: true})
	ccfg := security.Config{CertFile: cf, KeyFile: kf, CAFile: p.caFile()}

	creds, err := security.NewClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer creds.Close()
	conn, err := grpc.NewClient("passthrough:///"+srv.Addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := testserver.Call(ctx, conn); err != nil {
		t.Fatal(err)
	}
	// A call in flight across the rotation.
	entered, release := srv.HoldCalls()
	held := make(chan error, 1)
	go func() { held <- testserver.Call(ctx, conn) }()
	<-entered

	// A new server certificate, with a name only it has.
	c, k, err := p.ca.Issue(devcert.Request{CommonName: "user", DNSNames: []string{"user", "user-rotated"}, IPs: loopback, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := devcert.WriteFiles(filepath.Dir(scf), strings.TrimSuffix(filepath.Base(scf), ".pem"), c, k); err != nil {
		t.Fatal(err)
	}
	_ = skf
	// New connections get it once the watcher has read it: a TLS
	// handshake expecting the name only the new certificate has succeeds.
	// (A handshake, not a call: calls are held.)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(p.ca.CertPEM)
	clientCert, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	// The provider reads the files every 20 ms and tells no one: try a
	// handshake at that pace (not as fast as the CPU goes, which on a
	// loaded machine starves the reader), for at most 30 s.
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	pace := time.NewTicker(20 * time.Millisecond)
	defer pace.Stop()
	for {
		tc, err := tls.Dial("tcp", srv.Addr, &tls.Config{RootCAs: roots, ServerName: "user-rotated", Certificates: []tls.Certificate{clientCert}, NextProtos: []string{"h2"}})
		if err == nil {
			tc.Close()
			break
		}
		select {
		case <-pace.C:
		case <-deadline.C:
			t.Fatalf("new connections never got the new certificate in 30 s: %v", err)
		}
	}
	// The call in flight across the rotation completes, and the
	// connection opened before still serves.
	release()
	if err := <-held; err != nil {
		t.Errorf("call in flight across the rotation: %v", err)
	}
	if err := testserver.Call(ctx, conn); err != nil {
		t.Errorf("call on the connection opened before the rotation: %v", err)
	}
	cancel()
}

func TestBadFilesNamed(t *testing.T) {
	p := newPKI(t, "lodestar test CA")
	cf, kf := p.issue("server", devcert.Request{CommonName: "user", Server: true})
	garbage := filepath.Join(p.dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not pem"), 0o644)
	for _, c := range []struct {
		server bool
		cfg    security.Config
		want   string
	}{
		{true, security.Config{}, "a server needs a certificate and a key"},
		{true, security.Config{CertFile: cf, KeyFile: filepath.Join(p.dir, "missing.pem")}, "missing.pem"},
		{true, security.Config{CertFile: garbage, KeyFile: kf}, "certificate " + garbage},
		{true, security.Config{CertFile: cf, KeyFile: kf, CAFile: garbage}, "CA file " + garbage + ": no PEM certificate"},
		{false, security.Config{CertFile: cf}, "needs both CertFile and KeyFile"},
	} {
		var err error
		if c.server {
			_, err = security.NewServer(c.cfg)
		} else {
			_, err = security.NewClient(c.cfg)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.cfg, err, c.want)
		}
	}
}
