package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCertWritesOnlyWhereItShould: names are checked like service names
// and may not write the CA's files or outside --dir; an existing
// certificate is kept unless --force; a CA already in --dir signs new
// certificates, which verify against its ca.pem.
func TestCertWritesOnlyWhereItShould(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	parent := t.TempDir()
	dir := filepath.Join(parent, "certs")
	cert := func(args ...string) (string, error) {
		out := newSyncBuffer()
		err := run(ctx, append([]string{"cert", "--dir", dir}, args...), nil, out, out)
		return out.String(), err
	}
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if out, err := cert("--services", "user", "--clients", "cli"); err != nil || !strings.Contains(out, "(new)") {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	caPEM, caKey, userPEM := read("ca.pem"), read("ca-key.pem"), read("user.pem")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--services", "ca"}, `"ca" is the CA's own name`},
		{[]string{"--clients", "ca"}, `"ca" is the CA's own name`},
		{[]string{"--clients", "ca-key"}, "would both write " + filepath.Join(dir, "ca-key.pem")},
		{[]string{"--services", "x", "--clients", "x-key"}, "would both write " + filepath.Join(dir, "x-key.pem")},
		{[]string{"--clients", "../x"}, "contains '/'"},
		{[]string{"--services", ".."}, `".."`},
		{[]string{"--clients", "a\x1b[2Jb"}, `\x1b`},
		{[]string{"--clients", "a,,b"}, "empty"},
		{[]string{"--services", "user"}, filepath.Join(dir, "user.pem") + " exists: give --force"},
	} {
		_, err := cert(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\x1b") {
			t.Errorf("cert %q: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
	for _, f := range []string{"ca.pem", "ca-key.pem", "user.pem"} {
		if got := read(f); !bytes.Equal(got, map[string][]byte{"ca.pem": caPEM, "ca-key.pem": caKey, "user.pem": userPEM}[f]) {
			t.Errorf("%s changed by a refused run", f)
		}
	}
	for _, stray := range []string{filepath.Join(parent, "x.pem"), filepath.Join(dir, "x.pem"), filepath.Join(dir, "x-key.pem")} {
		if _, err := os.Stat(stray); err == nil {
			t.Errorf("a refused run wrote %s", stray)
		}
	}

	// A new service later, and a replaced one: signed by the same CA.
	if out, err := cert("--services", "order"); err != nil || !strings.Contains(out, "(existing, reused)") {
		t.Fatalf("adding a service: %v\n%s", err, out)
	}
	if _, err := cert("--services", "user", "--force"); err != nil {
		t.Fatalf("--force: %v", err)
	}
	if bytes.Equal(read("user.pem"), userPEM) {
		t.Error("--force did not replace user.pem")
	}
	if !bytes.Equal(read("ca.pem"), caPEM) || !bytes.Equal(read("ca-key.pem"), caKey) {
		t.Fatal("the CA was replaced")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	for _, name := range []string{"order", "user"} {
		b, _ := pem.Decode(read(name + ".pem"))
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("%s.pem does not verify against the first run's ca.pem: %v", name, err)
		}
	}

	// A CA certificate without its key cannot sign: refused, not replaced.
	if err := os.Remove(filepath.Join(dir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	if _, err := cert("--services", "inventory"); err == nil || !strings.Contains(err.Error(), "ca-key.pem does not") {
		t.Errorf("CA without its key: %v", err)
	}
	if !bytes.Equal(read("ca.pem"), caPEM) {
		t.Error("ca.pem replaced when its key was missing")
	}
}
