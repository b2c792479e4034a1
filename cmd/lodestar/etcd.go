package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/lodestar-rpc/lodestar/internal/embedetcd"
)

func newEtcdCmd() *cobra.Command {
	var (
		cfg       embedetcd.MemberConfig
		startWait time.Duration
	)
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Run one embedded etcd member (alone, or as one of a cluster started by hand)",
		Long: `Run one embedded etcd member until interrupted.

Alone:
  lodestar etcd

A 3-member cluster on one machine, one command per terminal:
  lodestar etcd --name n1 --client-url http://127.0.0.1:2379 --peer-url http://127.0.0.1:2380 \
    --initial-cluster n1=http://127.0.0.1:2380,n2=http://127.0.0.1:12380,n3=http://127.0.0.1:22380
  lodestar etcd --name n2 --client-url http://127.0.0.1:12379 --peer-url http://127.0.0.1:12380 \
    --initial-cluster n1=http://127.0.0.1:2380,n2=http://127.0.0.1:12380,n3=http://127.0.0.1:22380
  lodestar etcd --name n3 --client-url http://127.0.0.1:22379 --peer-url http://127.0.0.1:22380 \
    --initial-cluster n1=http://127.0.0.1:2380,n2=http://127.0.0.1:12380,n3=http://127.0.0.1:22380

Clients then use --endpoints http://127.0.0.1:2379,http://127.0.0.1:12379,http://127.0.0.1:22379.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.AnyHost = true // an operator's command: members may run on real hosts
			if cfg.Dir == "" {
				cfg.Dir = cfg.Name + ".etcd"
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "starting etcd member %s (data in %s); waiting for a quorum...\n", cfg.Name, cfg.Dir)
			ctx, cancel := context.WithTimeout(cmd.Context(), startWait)
			e, err := embedetcd.Start(ctx, cfg)
			cancel()
			if err != nil {
				return err
			}
			defer e.Close()
			fmt.Fprintf(out, "etcd member %s ready: clients at %s, peers at %s. Ctrl-C stops it.\n", cfg.Name, cfg.ClientURL, cfg.PeerURL)
			select {
			case <-cmd.Context().Done():
				fmt.Fprintf(out, "stopping etcd member %s\n", cfg.Name)
				return nil
			case err := <-e.Err():
				return fmt.Errorf("etcd member %s: %w", cfg.Name, err)
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", "default", "member name, unique in the cluster")
	f.StringVar(&cfg.Dir, "data-dir", "", "data directory (default <name>.etcd)")
	f.StringVar(&cfg.ClientURL, "client-url", "http://127.0.0.1:2379", "URL to listen on and advertise for clients")
	f.StringVar(&cfg.PeerURL, "peer-url", "http://127.0.0.1:2380", "URL to listen on and advertise for peers")
	f.StringVar(&cfg.InitialCluster, "initial-cluster", "", "every member as name=peer-url, comma-separated (default: this member alone)")
	f.StringVar(&cfg.ClusterState, "initial-cluster-state", embedetcd.ClusterStateNew, "new, or existing to join a cluster this member was added to")
	f.StringVar(&cfg.ClusterToken, "initial-cluster-token", embedetcd.DefaultClusterToken, "token that tells clusters apart at bootstrap")
	f.DurationVar(&startWait, "start-timeout", 2*time.Minute, "give up if the member is not ready (no quorum) within this time")
	return cmd
}
