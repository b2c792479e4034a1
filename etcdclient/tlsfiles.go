package etcdclient

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/lodestar-rpc/lodestar/internal/tlsfiles"
)

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
