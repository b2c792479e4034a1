package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lodestar-rpc/lodestar/etcdauth"
	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/quote"
	"github.com/lodestar-rpc/lodestar/registry"
)

// checkUser refuses an empty user name, or one that would not print as
// itself in messages and etcd's listings.
func checkUser(user string) error {
	if user == "" {
		return errors.New("--user is required")
	}
	if cell(user) != user {
		return fmt.Errorf("--user %s: want printable characters without spaces or quotes", quote.Bounded(user))
	}
	return nil
}

func newAuthCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "Set up etcd users and roles for lodestar",
		Long: `Set up etcd's role-based access for lodestar:

  lodestar auth enable --root-password-file root.pw
  LODESTAR_ETCD_PASSWORD=... lodestar auth registrar --service user --user user-svc --password-file user-svc.pw --etcd-user root
  lodestar auth reader --user clients --etcd-user root --etcd-password-file root.pw    (prompts for the new password)

A registrar role may read and write only <prefix>/<service>/; the reader
role may only read <prefix>/. Servers then connect to etcd as their
registrar user, clients as a reader.

Passwords are never flags' values (argv is visible to every user of the
machine): each comes from a file (--*-password-file, one line), stdin
(--*-password-stdin, one of them at most), an environment variable
(LODESTAR_ROOT_PASSWORD, LODESTAR_USER_PASSWORD, LODESTAR_ETCD_PASSWORD),
or a prompt when stdin is a terminal. No password is sent over a
plaintext endpoint (http://) unless --insecure-auth is given.`,
	}
	var timeout time.Duration
	cmd.PersistentFlags().DurationVar(&timeout, "timeout", 10*time.Second, "give up if etcd does not answer within this time")
	// run reads the new password, connects to etcd with the global flags
	// and calls f with the password.
	run := func(c *cobra.Command, pw *secret, f func(ctx context.Context, cli *clientv3.Client, password string) error) error {
		if pw.stdin && g.etcdPassword.stdin {
			return fmt.Errorf("--%s and --%s both read stdin: give one of the passwords another way", pw.stdinFlag, g.etcdPassword.stdinFlag)
		}
		cfg, err := g.baseConfig()
		if err != nil {
			return err
		}
		if plain := etcdclient.PlaintextEndpoints(cfg); len(plain) > 0 && !g.insecureAuth {
			return fmt.Errorf("refusing to send %s to etcd over plain %s; use https, or --insecure-auth for a trusted network", pw.what, plain[0])
		}
		password, err := pw.read(c.Context(), g.in, g.prompt)
		if err != nil {
			return err
		}
		if err := g.readPassword(c.Context(), &cfg); err != nil {
			return err
		}
		cli, err := g.connect(c.Context(), cfg)
		if err != nil {
			return err
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(c.Context(), timeout)
		defer cancel()
		return g.explain(c.Context(), f(ctx, cli, password))
	}
	rootPW := &secret{what: "the password of etcd's root user", fileFlag: "root-password-file", stdinFlag: "root-password-stdin",
		env: "LODESTAR_ROOT_PASSWORD", confirm: true}
	enable := &cobra.Command{
		Use:   "enable",
		Short: "Create the root user and turn etcd auth on",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return run(c, rootPW, func(ctx context.Context, cli *clientv3.Client, password string) error {
				if err := etcdauth.EnableAuth(ctx, cli, password); err != nil {
					return err
				}
				fmt.Fprintln(c.OutOrStdout(), "etcd auth enabled; connect as root with --etcd-user root")
				return nil
			})
		},
	}
	enable.Flags().StringVar(&rootPW.file, rootPW.fileFlag, "", "file holding the root user's password (one line)")
	enable.Flags().BoolVar(&rootPW.stdin, rootPW.stdinFlag, false, "read the root user's password from stdin (one line)")
	hiddenRefused(enable.Flags(), "root-password")

	var service, user string
	userPW := &secret{fileFlag: "password-file", stdinFlag: "password-stdin", env: "LODESTAR_USER_PASSWORD", confirm: true}
	registrar := &cobra.Command{
		Use:   "registrar",
		Short: "Create a service's registrar role and a user holding it",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := registry.ValidateService(service); err != nil {
				return fmt.Errorf("--service: %w", err)
			}
			if err := checkUser(user); err != nil {
				return err
			}
			userPW.what = fmt.Sprintf("the password of new user %s", user)
			return run(c, userPW, func(ctx context.Context, cli *clientv3.Client, password string) error {
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
			if err := checkUser(user); err != nil {
				return err
			}
			userPW.what = fmt.Sprintf("the password of new user %s", user)
			return run(c, userPW, func(ctx context.Context, cli *clientv3.Client, password string) error {
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
		c.Flags().StringVar(&userPW.file, userPW.fileFlag, "", "file holding the new user's password (one line)")
		c.Flags().BoolVar(&userPW.stdin, userPW.stdinFlag, false, "read the new user's password from stdin (one line)")
		hiddenRefused(c.Flags(), "password")
	}
	registrar.Flags().StringVar(&service, "service", "", "service the role may register (required)")
	cmd.AddCommand(enable, registrar, reader)
	return cmd
}
