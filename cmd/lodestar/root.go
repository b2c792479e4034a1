package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/registry"
)

// globals are the flags every subcommand shares.
type globals struct {
	endpoints []string
	prefix    string

	etcdCert, etcdKey, etcdCA string
	etcdUser, etcdPassword    string
}

// etcdConfig is the etcd client configuration the flags describe.
func (g *globals) etcdConfig() (etcdclient.Config, error) {
	cfg := etcdclient.Config{Endpoints: g.endpoints, Username: g.etcdUser, Password: g.etcdPassword}
	if g.etcdCert != "" || g.etcdKey != "" || g.etcdCA != "" {
		tc, err := etcdclient.TLSFiles(g.etcdCert, g.etcdKey, g.etcdCA)
		if err != nil {
			return cfg, err
		}
		cfg.TLS = tc
	}
	if g.etcdUser != "" && g.etcdPassword == "" {
		return cfg, fmt.Errorf("--etcd-user %s needs a password (--etcd-password or LODESTAR_ETCD_PASSWORD)", g.etcdUser)
	}
	return cfg, nil
}

// etcdClient connects with the flags' configuration.
func (g *globals) etcdClient() (*clientv3.Client, error) {
	cfg, err := g.etcdConfig()
	if err != nil {
		return nil, err
	}
	return etcdclient.New(cfg)
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "lodestar",
		Short:         "gRPC service registration and discovery on etcd",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	defEndpoints := []string{etcdclient.DefaultEndpoint}
	if env := os.Getenv("LODESTAR_ENDPOINTS"); env != "" {
		defEndpoints = strings.Split(env, ",")
	}
	root.PersistentFlags().StringSliceVar(&g.endpoints, "endpoints", defEndpoints,
		"etcd client URLs, comma-separated (env LODESTAR_ENDPOINTS)")
	root.PersistentFlags().StringVar(&g.prefix, "prefix", registry.DefaultPrefix, "etcd key prefix of registrations")
	pf := root.PersistentFlags()
	pf.StringVar(&g.etcdCA, "etcd-ca", "", "CA file to verify etcd's certificate (https endpoints)")
	pf.StringVar(&g.etcdCert, "etcd-cert", "", "client certificate file for etcd")
	pf.StringVar(&g.etcdKey, "etcd-key", "", "client key file for etcd")
	pf.StringVar(&g.etcdUser, "etcd-user", "", "etcd user, when etcd auth is on")
	pf.StringVar(&g.etcdPassword, "etcd-password", os.Getenv("LODESTAR_ETCD_PASSWORD"), "etcd password (env LODESTAR_ETCD_PASSWORD)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%s: %w (see '%s --help')", c.CommandPath(), err, c.CommandPath())
	})
	root.AddCommand(newDemoCmd(), newEtcdCmd(), newDevCmd(g), newListCmd(g), newCertCmd(), newAuthCmd(g))
	return root
}
