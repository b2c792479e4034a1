package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lodestar-rpc/lodestar/etcdauth"
)

func newAuthCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "Set up etcd users and roles for lodestar",
		Long: `Set up etcd's role-based access for lodestar:

  lodestar auth enable --root-password ROOTPW
  lodestar auth registrar --service user --user user-svc --password PW --etcd-user root --etcd-password ROOTPW
  lodestar auth reader --user clients --password PW --etcd-user root --etcd-password ROOTPW

A registrar role may read and write only <prefix>/<service>/; the reader
role may only read <prefix>/. Servers then connect to etcd as their
registrar user, clients as a reader.`,
	}
	var timeout time.Duration
	cmd.PersistentFlags().DurationVar(&timeout, "timeout", 10*time.Second, "give up if etcd does not answer within this time")
	// run connects to etcd with the global flags and calls f.
	run := func(c *cobra.Command, f func(ctx context.Context, cli *clientv3.Client) error) error {
		ctx, cancel := context.WithTimeout(c.Context(), timeout)
		defer cancel()
		cli, err := g.etcdClient()
		if err != nil {
			return err
		}
		defer cli.Close()
		return f(ctx, cli)
	}
	var rootPW string
	enable := &cobra.Command{
		Use:   "enable",
		Short: "Create the root user and turn etcd auth on",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return run(c, func(ctx context.Context, cli *clientv3.Client) error {
				if err := etcdauth.EnableAuth(ctx, cli, rootPW); err != nil {
					return err
				}
				fmt.Fprintln(c.OutOrStdout(), "etcd auth enabled; connect as root with --etcd-user root")
				return nil
			})
		},
	}
	enable.Flags().StringVar(&rootPW, "root-password", "", "password of the root user (required)")

	var service, user, password string
	registrar := &cobra.Command{
		Use:   "registrar",
		Short: "Create a service's registrar role and a user holding it",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return run(c, func(ctx context.Context, cli *clientv3.Client) error {
				if err := etcdauth.Registrar(ctx, cli, g.prefix, service, user, password); err != nil {
					return err
				}
				fmt.Fprintf(c.OutOrStdout(), "user %s has role %s: readwrite on %s/%s/\n", user, etcdauth.RegistrarRole(service), g.prefix, service)
				return nil
			})
		},
	}
	reader := &cobra.Command{
		Use:   "reader",
		Short: "Create the reader role and a user holding it",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return run(c, func(ctx context.Context, cli *clientv3.Client) error {
				if err := etcdauth.Reader(ctx, cli, g.prefix, user, password); err != nil {
					return err
				}
				fmt.Fprintf(c.OutOrStdout(), "user %s has role %s: read on %s/\n", user, etcdauth.ReaderRole, g.prefix)
				return nil
			})
		},
	}
	for _, c := range []*cobra.Command{registrar, reader} {
		c.Flags().StringVar(&user, "user", "", "user to create (required)")
		c.Flags().StringVar(&password, "password", "", "its password (required)")
	}
	registrar.Flags().StringVar(&service, "service", "", "service the role may register (required)")
	cmd.AddCommand(enable, registrar, reader)
	return cmd
}
