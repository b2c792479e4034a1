package tlsfiles

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lodestar-rpc/lodestar/security/devcert"
)

func TestLoadPool(t *testing.T) {
	dir := t.TempDir()
	ca, err := devcert.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	good, bad := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(good, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	pool, err := LoadPool(good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Cert.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Fatalf("the CA does not verify against its own pool: %v", err)
	}
	for file, want := range map[string]string{bad: bad + ": no PEM certificate", filepath.Join(dir, "none.pem"): "no such file"} {
		if _, err := LoadPool(file); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadPool(%s) = %v, want an error containing %q", file, err, want)
		}
	}
}
