// Package devcert makes a certificate authority and certificates for
// development and tests: ECDSA P-256 keys, PEM files, names and lifetimes
// of your choice. "lodestar cert" uses it; production certificates come
// from your own PKI.
package devcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"time"

	"github.com/lodestar-rpc/lodestar/internal/atomicfile"
	"github.com/lodestar-rpc/lodestar/internal/quote"
)

// CA is a certificate authority.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a self-signed CA named name, valid for validity from now.
func NewCA(name string, validity time.Duration) (*CA, error) {
	if name == "" || validity <= 0 {
		return nil, fmt.Errorf("devcert: CA %q valid for %v: want a name and a positive validity", name, validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"lodestar development"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), KeyPEM: keyPEM}, nil
}

// LoadCA returns the CA whose certificate and key are certPEM and keyPEM
// (as NewCA makes them, or any CA certificate with a PKCS#8, EC or
// PKCS#1 key). It refuses a certificate that is not a CA's, has expired,
// or does not match the key.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("devcert: CA certificate: no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devcert: CA certificate: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("devcert: certificate of %s is not a CA's (it cannot sign certificates)", quote.Bounded(cert.Subject.CommonName))
	}
	if now := time.Now(); now.After(cert.NotAfter) {
		return nil, fmt.Errorf("devcert: CA %s expired at %s", quote.Bounded(cert.Subject.CommonName), cert.NotAfter.Format(time.RFC3339))
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("devcert: CA key: no PEM block")
	}
	var key any
	switch kb.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kb.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(kb.Bytes)
	default:
		return nil, fmt.Errorf("devcert: CA key: PEM block %s is not a private key", quote.Bounded(kb.Type))
	}
	if err != nil {
		return nil, fmt.Errorf("devcert: CA key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("devcert: CA key: %T cannot sign", key)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("devcert: the key does not match the certificate of CA %s", quote.Bounded(cert.Subject.CommonName))
	}
	return &CA{Cert: cert, Key: signer, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// Request describes a certificate to issue.
type Request struct {
	// CommonName is the subject's name (for a client, its identity, such
	// as the service it is).
	CommonName string
	// DNSNames and IPs are the names a server answers to (for lodestar,
	// the service name: clients verify it by default).
	DNSNames []string
	IPs      []net.IP
	// NotBefore and NotAfter bound its validity (default: from a minute
	// ago for a year).
	NotBefore, NotAfter time.Time
	// Server and Client set the key usages (both when neither is set).
	Server, Client bool
}

// Issue returns a certificate and key for req, in PEM, signed by ca.
func (ca *CA) Issue(req Request) (certPEM, keyPEM []byte, err error) {
	if req.CommonName == "" {
		return nil, nil, errors.New("devcert: a certificate needs a common name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if req.NotBefore.IsZero() {
		req.NotBefore = time.Now().Add(-time.Minute)
	}
	if req.NotAfter.IsZero() {
		req.NotAfter = req.NotBefore.Add(365 * 24 * time.Hour)
	}
	if !req.Server && !req.Client {
		req.Server, req.Client = true, true
	}
	var usage []x509.ExtKeyUsage
	if req.Server {
		usage = append(usage, x509.ExtKeyUsageServerAuth)
	}
	if req.Client {
		usage = append(usage, x509.ExtKeyUsageClientAuth)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: req.CommonName},
		DNSNames:     req.DNSNames,
		IPAddresses:  req.IPs,
		NotBefore:    req.NotBefore,
		NotAfter:     req.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// WriteFiles writes <name>.pem and <name>-key.pem into dir (keys readable
// by the owner only) and returns their paths.
func WriteFiles(dir, name string, certPEM, keyPEM []byte) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := atomicfile.Write(certFile, certPEM, 0o644); err != nil {
		return "", "", err
	}
	if err := atomicfile.Write(keyFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n
}
