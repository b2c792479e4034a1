package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lodestar-rpc/lodestar/registry"
)

func newListCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "list [service]",
		Short: "List registered instances, read from etcd",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			service := ""
			if len(args) == 1 {
				service = args[0]
				if err := registry.ValidateService(service); err != nil {
					return err
				}
			}
			cli, err := g.etcdClient(cmd.Context())
			if err != nil {
				return err
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return g.explain(cmd.Context(), listInstances(ctx, cli, g.prefix, service, cmd.OutOrStdout()))
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up if etcd does not answer within this time")
	return cmd
}

// listInstances prints the instances under prefix (of one service, or all)
// as a table; values that do not parse are listed with the reason. Every
// string read from etcd goes through cell or text: a key or value may
// hold escape sequences meant for the terminal.
func listInstances(ctx context.Context, cli *clientv3.Client, prefix, service string, w io.Writer) error {
	p := strings.TrimRight(prefix, "/") + "/"
	if service != "" {
		p = registry.ServicePrefix(prefix, service)
	}
	resp, err := cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return fmt.Errorf("read %s from etcd %s: %w", cell(p), strings.Join(cli.Endpoints(), ","), err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tID\tADDRESS\tSTATUS\tWEIGHT\tVERSION\tZONE\tREGION\tLEASE")
	kvs := resp.Kvs
	for _, kv := range kvs {
		svc, id, err := registry.ParseKey(prefix, string(kv.Key))
		if err != nil {
			fmt.Fprintf(tw, "%s\t\t(key not <prefix>/<service>/<id>)\n", cell(string(kv.Key)))
			continue
		}
		addr, md, err := registry.Decode(kv.Value)
		if err != nil {
			fmt.Fprintf(tw, "%s\t%s\t(unreadable: %s)\n", cell(svc), cell(id), text(err.Error()))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%x\n", cell(svc), cell(id), cell(addr), cell(string(md.Status)), md.Weight,
			dash(md.Version), dash(md.Zone), dash(md.Region), kv.Lease)
	}
	if len(kvs) == 0 {
		fmt.Fprintf(tw, "(nothing registered under %s)\n", cell(p))
	}
	return tw.Flush()
}

// dash renders an optional string read from etcd: "-" when empty.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return cell(s)
}
