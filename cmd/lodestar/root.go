package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/registry"
)

// globals are the flags every subcommand shares.
type globals struct {
	endpoints []string
	prefix    string
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
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%s: %w (see '%s --help')", c.CommandPath(), err, c.CommandPath())
	})
	root.AddCommand(newDemoCmd(), newEtcdCmd(), newDevCmd(g), newListCmd(g))
	return root
}
