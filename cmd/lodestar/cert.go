package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/lodestar-rpc/lodestar/registry"
	"github.com/lodestar-rpc/lodestar/security/devcert"
)

func newCertCmd() *cobra.Command {
	var (
		dir      string
		services []string
		clients  []string
		validity time.Duration
	)
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Create a development CA and certificates for mutual TLS",
		Long: `Create a development certificate authority and, signed by it, a server
certificate per service (named for the service, localhost and 127.0.0.1:
clients verify the service name) and a client certificate per client name
(its identity for authorization). Files: ca.pem, ca-key.pem, <name>.pem,
<name>-key.pem. For development and tests; production certificates come
from your own PKI.

  lodestar cert --dir certs --services user,order --clients order,cli`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(services) == 0 && len(clients) == 0 {
				return fmt.Errorf("cert: nothing to issue: give --services and/or --clients")
			}
			if validity <= 0 {
				return fmt.Errorf("cert: --validity %v: want a positive duration", validity)
			}
			for _, s := range services {
				if err := registry.ValidateService(s); err != nil {
					return fmt.Errorf("cert: --services: %w", err)
				}
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("cert: %w", err)
			}
			ca, err := devcert.NewCA("lodestar development CA", validity)
			if err != nil {
				return err
			}
			if _, _, err := devcert.WriteFiles(dir, "ca", ca.CertPEM, ca.KeyPEM); err != nil {
				return fmt.Errorf("cert: %w", err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "CA:      %s\n", filepath.Join(dir, "ca.pem"))
			issue := func(kind, name string, req devcert.Request) error {
				c, k, err := ca.Issue(req)
				if err != nil {
					return err
				}
				cf, kf, err := devcert.WriteFiles(dir, name, c, k)
				if err != nil {
					return fmt.Errorf("cert: %w", err)
				}
				fmt.Fprintf(out, "%s %s, %s\n", kind, cf, kf)
				return nil
			}
			end := time.Now().Add(validity)
			// A name in both lists gets one certificate for both uses:
			// writing two would leave only the second.
			isClient := map[string]bool{}
			for _, c := range clients {
				if c == "" {
					return fmt.Errorf("cert: --clients: an empty name")
				}
				isClient[c] = true
			}
			for _, s := range services {
				kind := "server:"
				if isClient[s] {
					kind = "server+client:"
				}
				if err := issue(kind, s, devcert.Request{CommonName: s, DNSNames: []string{s, "localhost"},
					IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Client: isClient[s], NotAfter: end}); err != nil {
					return err
				}
				delete(isClient, s)
			}
			for _, c := range clients {
				if !isClient[c] {
					continue // issued with the services
				}
				if err := issue("client:", c, devcert.Request{CommonName: c, Client: true, NotAfter: end}); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "certs", "directory to write the files into")
	cmd.Flags().StringSliceVar(&services, "services", nil, "services to issue server certificates for, comma-separated")
	cmd.Flags().StringSliceVar(&clients, "clients", nil, "client names to issue client certificates for, comma-separated")
	cmd.Flags().DurationVar(&validity, "validity", 365*24*time.Hour, "how long the certificates are valid")
	return cmd
}
