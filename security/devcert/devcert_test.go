package devcert_test

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/lodestar-rpc/lodestar/security/devcert"
)

// TestLoadCA: a CA written as PEM loads back and signs certificates that
// verify against its original certificate; a leaf, a key of another CA
// or garbage is refused with the reason.
func TestLoadCA(t *testing.T) {
	ca, err := devcert.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := devcert.NewCA("other CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := devcert.LoadCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leafPEM, leafKey, err := loaded.Issue(devcert.Request{CommonName: "svc", DNSNames: []string{"svc"}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(leafPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "svc"}); err != nil {
		t.Errorf("a certificate from the loaded CA does not verify against the original: %v", err)
	}
	for _, tc := range []struct {
		cert, key []byte
		want      string
	}{
		{leafPEM, leafKey, "not a CA's"},
		{ca.CertPEM, other.KeyPEM, "does not match"},
		{[]byte("junk"), ca.KeyPEM, "no PEM CERTIFICATE block"},
		{ca.CertPEM, []byte("junk"), "no PEM block"},
	} {
		if _, err := devcert.LoadCA(tc.cert, tc.key); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadCA = %v, want an error containing %q", err, tc.want)
		}
	}
}
