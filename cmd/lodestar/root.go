package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/quote"
	"github.com/lodestar-rpc/lodestar/registry"
)

// globals are the flags every subcommand shares.
type globals struct {
	endpoints []string
	prefix    string

	etcdCert, etcdKey, etcdCA string
	etcdUser                  string
	etcdPassword              secret
	insecureAuth              bool

	// probe is the configuration etcdConfig made, passwords left out,
	// for explain.
	probe etcdclient.Config

	// in and prompt are where a password is read from (--*-stdin, or a
	// prompt when in is a terminal) and where the prompt is written.
	in     io.Reader
	prompt io.Writer
}

// baseConfig is the etcd client configuration the flags describe, but
// the password.
func (g *globals) baseConfig() (etcdclient.Config, error) {
	cfg := etcdclient.Config{Endpoints: g.endpoints, Username: g.etcdUser, AllowInsecureAuth: g.insecureAuth}
	if g.etcdCert != "" || g.etcdKey != "" || g.etcdCA != "" {
		tc, err := etcdclient.TLSFiles(g.etcdCert, g.etcdKey, g.etcdCA)
		if err != nil {
			return cfg, err
		}
		cfg.TLS = tc
	}
	g.probe = etcdclient.Config{Endpoints: cfg.Endpoints, TLS: cfg.TLS}
	return cfg, nil
}

// etcdConfig is the etcd client configuration the flags describe. The
// password is read here, when it is needed.
func (g *globals) etcdConfig(ctx context.Context) (etcdclient.Config, error) {
	cfg, err := g.baseConfig()
	if err != nil {
		return cfg, err
	}
	return cfg, g.readPassword(ctx, &cfg)
}

// readPassword sets cfg's password from its source, when a user is set.
func (g *globals) readPassword(ctx context.Context, cfg *etcdclient.Config) error {
	if g.etcdUser == "" {
		if g.etcdPassword.file != "" || g.etcdPassword.stdin {
			return fmt.Errorf("--%s or --%s given without --etcd-user", g.etcdPassword.fileFlag, g.etcdPassword.stdinFlag)
		}
		return nil
	}
	// Refused before asking for a password that etcdclient.New would
	// refuse to send.
	if plain := etcdclient.PlaintextEndpoints(*cfg); len(plain) > 0 && !g.insecureAuth {
		return fmt.Errorf("refusing to send the password of etcd user %s over plain %s; use https, or --insecure-auth for a trusted network",
			quote.Bounded(g.etcdUser), plain[0])
	}
	g.etcdPassword.what = fmt.Sprintf("the password of etcd user %s", cell(g.etcdUser))
	pw, err := g.etcdPassword.read(ctx, g.in, g.prompt)
	if err != nil {
		return fmt.Errorf("--etcd-user %s needs a password: %w", cell(g.etcdUser), err)
	}
	cfg.Password = pw
	return nil
}

// etcdClient connects with the flags' configuration. ctx is the
// command's (New itself is bounded by the dial timeout).
func (g *globals) etcdClient(ctx context.Context) (*clientv3.Client, error) {
	cfg, err := g.etcdConfig(ctx)
	if err != nil {
		return nil, err
	}
	return g.connect(ctx, cfg)
}

// connect returns a client for cfg; an error says why etcd did not
// answer, when it did not.
func (g *globals) connect(ctx context.Context, cfg etcdclient.Config) (*clientv3.Client, error) {
	cli, err := etcdclient.New(cfg)
	return cli, g.explain(ctx, err)
}

// argvSecrets are flags that once took a password on the command line,
// where every user of the machine can read it. They are refused, naming
// the ways that remain.
var argvSecrets = map[string]string{
	"etcd-password": "LODESTAR_ETCD_PASSWORD, --etcd-password-file FILE, --etcd-password-stdin or the prompt",
	"password":      "LODESTAR_USER_PASSWORD, --password-file FILE, --password-stdin or the prompt",
	"root-password": "LODESTAR_ROOT_PASSWORD, --root-password-file FILE, --root-password-stdin or the prompt",
}

// refuseArgvSecret fails if c was given a password as a flag's value.
func refuseArgvSecret(c *cobra.Command) error {
	for name, instead := range argvSecrets {
		if f := c.Flags().Lookup(name); f != nil && f.Changed {
			return fmt.Errorf("--%s is not accepted: a password on the command line is visible to every user of the machine; use %s", name, instead)
		}
	}
	return nil
}

// hiddenRefused adds flag name, hidden, only so that refuseArgvSecret
// can say what to use instead.
func hiddenRefused(fs interface {
	String(name, value, usage string) *string
	MarkHidden(name string) error
}, name string) {
	fs.String(name, "", "refused: see "+argvSecrets[name])
	fs.MarkHidden(name)
}

func newRootCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globals{in: stdin, prompt: stderr}
	root := &cobra.Command{
		Use:           "lodestar",
		Short:         "gRPC service registration and discovery on etcd",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			return refuseArgvSecret(c)
		},
	}
	root.SetIn(stdin)
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
	pf.StringVar(&g.etcdUser, "etcd-user", "", "etcd user, when etcd auth is on; its password comes from env LODESTAR_ETCD_PASSWORD, --etcd-password-file, --etcd-password-stdin, or a prompt on a terminal")
	g.etcdPassword = secret{fileFlag: "etcd-password-file", stdinFlag: "etcd-password-stdin", env: "LODESTAR_ETCD_PASSWORD"}
	pf.StringVar(&g.etcdPassword.file, "etcd-password-file", "", "file holding the etcd user's password (one line)")
	pf.BoolVar(&g.etcdPassword.stdin, "etcd-password-stdin", false, "read the etcd user's password from stdin (one line)")
	pf.BoolVar(&g.insecureAuth, "insecure-auth", false, "allow sending the etcd password over plaintext http:// endpoints (only on a network you trust)")
	hiddenRefused(pf, "etcd-password")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%s: %w (see '%s --help')", c.CommandPath(), err, c.CommandPath())
	})
	root.AddCommand(newDemoCmd(), newEtcdCmd(), newDevCmd(g), newListCmd(g), newCertCmd(), newAuthCmd(g))
	return root
}
