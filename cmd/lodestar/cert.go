package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/lodestar-rpc/lodestar/registry"
	"github.com/lodestar-rpc/lodestar/security/devcert"
)

// caName is the name of the CA's own files, ca.pem and ca-key.pem.
const caName = "ca"

type certOptions struct {
	dir      string
	services []string
	clients  []string
	validity time.Duration
	force    bool
}

func newCertCmd() *cobra.Command {
	var o certOptions
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Create a development CA and certificates for mutual TLS",
		Long: `Create a development certificate authority and, signed by it, a server
certificate per service (named for the service, localhost and 127.0.0.1:
clients verify the service name) and a client certificate per client name
(its identity for authorization). Files: ca.pem, ca-key.pem, <name>.pem,
<name>-key.pem. For development and tests; production certificates come
from your own PKI.

A CA already in --dir (ca.pem and ca-key.pem) signs the new certificates,
so that everything holding its ca.pem trusts them; without one, a new CA
is made. To start over with a new CA, remove both files. A certificate
that exists is not replaced unless --force is given. Names follow the
rules of service names (no '/', no spaces or control characters, not "."
or ".."); "ca" is the CA's own.

  lodestar cert --dir certs --services user,order --clients order,cli
  lodestar cert --dir certs --services inventory     (signed by the same CA)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := issueCerts(o, cmd.OutOrStdout()); err != nil {
				return fmt.Errorf("cert: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.dir, "dir", "certs", "directory to write the files into")
	cmd.Flags().StringSliceVar(&o.services, "services", nil, "services to issue server certificates for, comma-separated")
	cmd.Flags().StringSliceVar(&o.clients, "clients", nil, "client names to issue client certificates for, comma-separated")
	cmd.Flags().DurationVar(&o.validity, "validity", 365*24*time.Hour, "how long the certificates are valid (a new CA too)")
	cmd.Flags().BoolVar(&o.force, "force", false, "replace certificates that exist (never the CA)")
	return cmd
}

// leaf is one certificate to issue.
type leaf struct {
	name              string
	server, client    bool
	certFile, keyFile string
}

// plan checks the names and returns the certificates to issue: one per
// name, for both uses when a name is in both lists (two files of one name
// would leave only the second). No two files are the same, and none is
// the CA's.
func (o certOptions) plan() ([]leaf, error) {
	if len(o.services) == 0 && len(o.clients) == 0 {
		return nil, errors.New("nothing to issue: give --services and/or --clients")
	}
	if o.validity <= 0 {
		return nil, fmt.Errorf("--validity %v: want a positive duration", o.validity)
	}
	var leaves []leaf
	index := map[string]int{}
	add := func(flag, name string, server bool) error {
		if err := registry.ValidateService(name); err != nil {
			return fmt.Errorf("--%s: %w", flag, err)
		}
		if name == caName {
			return fmt.Errorf("--%s: %q is the CA's own name (ca.pem, ca-key.pem)", flag, name)
		}
		if i, ok := index[name]; ok {
			leaves[i].server = leaves[i].server || server
			leaves[i].client = leaves[i].client || !server
			return nil
		}
		index[name] = len(leaves)
		leaves = append(leaves, leaf{name: name, server: server, client: !server,
			certFile: filepath.Join(o.dir, name+".pem"), keyFile: filepath.Join(o.dir, name+"-key.pem")})
		return nil
	}
	for _, s := range o.services {
		if err := add("services", s, true); err != nil {
			return nil, err
		}
	}
	for _, c := range o.clients {
		if err := add("clients", c, false); err != nil {
			return nil, err
		}
	}
	// "x-key" writes x-key.pem, which is x's key (or, for "ca-key", the
	// CA's).
	owner := map[string]string{filepath.Join(o.dir, "ca.pem"): caName, filepath.Join(o.dir, "ca-key.pem"): caName}
	for _, l := range leaves {
		for _, f := range []string{l.certFile, l.keyFile} {
			if other, ok := owner[f]; ok {
				return nil, fmt.Errorf("names %q and %q would both write %s", other, l.name, f)
			}
			owner[f] = l.name
		}
	}
	return leaves, nil
}

// issueCerts writes the certificates o asks for, signed by the CA in
// o.dir or a new one. Every check is made before the first file is
// written.
func issueCerts(o certOptions, out io.Writer) error {
	leaves, err := o.plan()
	if err != nil {
		return err
	}
	if !o.force {
		for _, l := range leaves {
			for _, f := range []string{l.certFile, l.keyFile} {
				if exists, err := fileExists(f); err != nil {
					return err
				} else if exists {
					return fmt.Errorf("%s exists: give --force to replace it", f)
				}
			}
		}
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return err
	}
	ca, reused, err := loadOrMakeCA(o.dir, o.validity)
	if err != nil {
		return err
	}
	if reused {
		fmt.Fprintf(out, "CA:      %s (existing, reused)\n", filepath.Join(o.dir, "ca.pem"))
	} else {
		fmt.Fprintf(out, "CA:      %s (new)\n", filepath.Join(o.dir, "ca.pem"))
	}
	end := time.Now().Add(o.validity)
	if end.After(ca.Cert.NotAfter) {
		end = ca.Cert.NotAfter
		fmt.Fprintf(out, "note:    certificates end with the CA, at %s\n", end.Format(time.RFC3339))
	}
	for _, l := range leaves {
		req := devcert.Request{CommonName: l.name, Server: l.server, Client: l.client, NotAfter: end}
		kind := "client:"
		if l.server {
			req.DNSNames, req.IPs = []string{l.name, "localhost"}, []net.IP{net.ParseIP("127.0.0.1")}
			kind = "server:"
			if l.client {
				kind = "server+client:"
			}
		}
		c, k, err := ca.Issue(req)
		if err != nil {
			return err
		}
		cf, kf, err := devcert.WriteFiles(o.dir, l.name, c, k)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s %s, %s\n", kind, cf, kf)
	}
	return nil
}

// loadOrMakeCA returns the CA of dir's ca.pem and ca-key.pem, or a new one
// written there when neither exists. One without the other is an error:
// a CA that cannot sign, or a key without its certificate, is not
// replaced silently.
func loadOrMakeCA(dir string, validity time.Duration) (ca *devcert.CA, reused bool, err error) {
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	certPEM, cerr := os.ReadFile(certFile)
	keyPEM, kerr := os.ReadFile(keyFile)
	switch {
	case cerr == nil && kerr == nil:
		ca, err := devcert.LoadCA(certPEM, keyPEM)
		if err != nil {
			return nil, false, fmt.Errorf("the CA in %s: %w (remove ca.pem and ca-key.pem to make a new one)", dir, err)
		}
		return ca, true, nil
	case errors.Is(cerr, fs.ErrNotExist) && errors.Is(kerr, fs.ErrNotExist):
		ca, err := devcert.NewCA("lodestar development CA", validity)
		if err != nil {
			return nil, false, err
		}
		if _, _, err := devcert.WriteFiles(dir, caName, ca.CertPEM, ca.KeyPEM); err != nil {
			return nil, false, err
		}
		return ca, false, nil
	case cerr == nil:
		return nil, false, fmt.Errorf("%s exists but %s does not: the CA cannot sign (restore its key, or remove %s to make a new CA)", certFile, keyFile, certFile)
	case kerr == nil:
		return nil, false, fmt.Errorf("%s exists but %s does not (restore the certificate, or remove %s to make a new CA)", keyFile, certFile, keyFile)
	case !errors.Is(cerr, fs.ErrNotExist):
		return nil, false, cerr
	default:
		return nil, false, kerr
	}
}

// fileExists reports whether path exists (a broken link counts).
func fileExists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}
