package etcdclient_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
	"github.com/lodestar-rpc/lodestar/security/devcert"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  etcdclient.Config
		want string
	}{
		{etcdclient.Config{Endpoints: []string{""}}, "empty endpoint"},
		{etcdclient.Config{Endpoints: []string{"ftp://127.0.0.1:2379"}}, `scheme "ftp"`},
		{etcdclient.Config{Endpoints: []string{"http://127.0.0.1"}}, `endpoint "http://127.0.0.1"`},
		{etcdclient.Config{Endpoints: []string{"127.0.0.1:notaport"}}, "1-65535"},
		{etcdclient.Config{Username: "root"}, "username and password must be given together"},
	} {
		cli, err := etcdclient.New(tc.cfg)
		if err == nil {
			cli.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want error containing %q", tc.cfg, err, tc.want)
		}
	}
}

// BenchmarkReconnectAfterLongOutage measures, after an outage long enough
// for grpc's default backoff to have grown to several seconds, how long a
// client from New and one with clientv3's defaults take to answer once
// etcd is ready again (New caps the backoff near one second). It reports
// the figures of one outage per iteration:
//
//	go test -run '^$' -bench ReconnectAfterLongOutage -benchtime 3x ./etcdclient
func BenchmarkReconnectAfterLongOutage(b *testing.B) {
	c := etcdtest.New(b)
	ours, err := etcdclient.New(etcdclient.Config{Endpoints: c.Endpoints()})
	if err != nil {
		b.Fatal(err)
	}
	defer ours.Close()
	plain, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	defer plain.Close()
	var oursTotal, plainTotal time.Duration
	for b.Loop() {
		for _, cli := range []*clientv3.Client{ours, plain} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := cli.Get(ctx, "k")
			cancel()
			if err != nil {
				b.Fatal(err)
			}
		}
		m := c.Member(0)
		m.Stop(b)
		// The outage is what is measured: both clients fail to reconnect
		// for 8 s, and their backoff grows.
		<-time.After(8 * time.Second)
		m.Restart(b)
		ready := m.ReadyAt()
		back := func(cli *clientv3.Client) time.Duration {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := cli.Get(ctx, "k"); err != nil {
				return -1
			}
			return time.Since(ready)
		}
		var d [2]time.Duration // etcdclient.New, clientv3 defaults
		var wg sync.WaitGroup
		for i, cli := range []*clientv3.Client{ours, plain} {
			wg.Go(func() { d[i] = back(cli) })
		}
		wg.Wait()
		if d[0] < 0 || d[1] < 0 {
			b.Fatalf("a client never came back: etcdclient.New %s, clientv3 defaults %s", d[0], d[1])
		}
		oursTotal += d[0]
		plainTotal += d[1]
	}
	b.ReportMetric(float64(oursTotal.Milliseconds())/float64(b.N), "ms-etcdclient.New")
	b.ReportMetric(float64(plainTotal.Milliseconds())/float64(b.N), "ms-clientv3-defaults")
}

// TLS with an http:// endpoint is refused: clientv3 would dial it in
// plaintext.
func TestTLSWithPlaintextEndpointRefused(t *testing.T) {
	_, err := etcdclient.New(etcdclient.Config{Endpoints: []string{"http://127.0.0.1:2379"}, TLS: &tls.Config{}})
	if err == nil || !strings.Contains(err.Error(), `endpoint "http://127.0.0.1:2379" is plaintext but TLS is configured`) {
		t.Fatalf("error %v", err)
	}
}

// TestTLSFilesPresentsRotatedCertificate: a certificate replaced on disk is
// presented at the next handshake; a half-replaced pair keeps the last
// good one. The server is a TLS listener on 127.0.0.1 that requires and
// verifies client certificates and records each one's name.
func TestTLSFilesPresentsRotatedCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, err := devcert.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	issue := func(name string) (certPEM, keyPEM []byte) {
		c, k, err := ca.Issue(devcert.Request{CommonName: name, Client: true})
		if err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	write := func(certPEM, keyPEM []byte) (certFile, keyFile string) {
		certFile, keyFile, err := devcert.WriteFiles(dir, "client", certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return certFile, keyFile
	}
	certFile, keyFile := write(issue("first"))
	cfg, err := etcdclient.TLSFiles(certFile, keyFile, caFile)
	if err != nil {
		t.Fatal(err)
	}

	srvCert, srvKey, err := ca.Issue(devcert.Request{CommonName: "etcd", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	names := make(chan string, 8)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if err := tc.Handshake(); err != nil {
				names <- "handshake failed: " + err.Error()
			} else {
				names <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
			}
			tc.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	presented := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		c.Close()
		select {
		case n := <-names:
			return n
		case <-time.After(10 * time.Second):
			t.Fatal("the server recorded no handshake")
			return ""
		}
	}

	if got := presented(); got != "first" {
		t.Fatalf("presented %q, want first", got)
	}
	write(issue("second"))
	if got := presented(); got != "second" {
		t.Fatalf("after the files were replaced, presented %q, want second", got)
	}
	// The certificate replaced, its key not yet: the pair does not match.
	third, _ := issue("third")
	if err := os.WriteFile(certFile, third, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := presented(); got != "second" {
		t.Fatalf("with a half-replaced pair, presented %q, want the last good one (second)", got)
	}
	// The key removed while the new one is written: still the last good.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if got := presented(); got != "second" {
		t.Fatalf("with the key file missing, presented %q, want the last good one (second)", got)
	}
	// The rotation completes, with handshakes under way at the same time.
	thirdCert, thirdKey := issue("third")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if c, err := tls.Dial("tcp", ln.Addr().String(), cfg); err == nil {
				c.Close()
			}
		})
	}
	write(thirdCert, thirdKey)
	wg.Wait()
	for range 8 {
		if n := <-names; n != "second" && n != "third" {
			t.Errorf("a handshake during the rotation presented %q", n)
		}
	}
	if got := presented(); got != "third" {
		t.Fatalf("after the rotation completed, presented %q, want third", got)
	}
}

// TestTLSFilesExpiredAndUnloadable: once the last good certificate has
// expired and its files do not load, the handshake fails and says why.
func TestTLSFilesExpiredAndUnloadable(t *testing.T) {
	dir := t.TempDir()
	ca, err := devcert.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := ca.Issue(devcert.Request{CommonName: "old", Client: true,
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := devcert.WriteFiles(dir, "client", c, k)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := etcdclient.TLSFiles(certFile, keyFile, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	_, err = cfg.GetClientCertificate(&tls.CertificateRequestInfo{})
	for _, want := range []string{certFile + " expired at", "does not load", "no such file"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("GetClientCertificate = %v, want an error containing %q", err, want)
		}
	}
}
