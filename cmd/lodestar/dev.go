package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/embedetcd"
	"github.com/lodestar-rpc/lodestar/registry"
)

type devOptions struct {
	clientURL string
	peerURL   string
	dataDir   string
	service   string
	instances int
	ttl       time.Duration
	duration  time.Duration
}

func newDevCmd(g *globals) *cobra.Command {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Start an embedded etcd and register a few gRPC instances on it",
		Long: `Start an embedded etcd and a few real gRPC servers (grpc.health.v1) on
127.0.0.1, register them in etcd under one lease, and print every change
under the prefix as it happens, until interrupted (or for --duration).

In another terminal, 'lodestar list' shows what is registered.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), g, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.clientURL, "client-url", "http://127.0.0.1:2379", "client URL of the embedded etcd (127.0.0.1 only)")
	f.StringVar(&o.peerURL, "peer-url", "http://127.0.0.1:2380", "peer URL of the embedded etcd (127.0.0.1 only)")
	f.StringVar(&o.dataDir, "data-dir", "", "etcd data directory (default: a temporary one, removed at exit)")
	f.StringVar(&o.service, "service", "user", "service name to register the instances under")
	f.IntVar(&o.instances, "instances", 3, "number of instances to start and register (1-50)")
	f.DurationVar(&o.ttl, "ttl", registry.DefaultTTL, "lease TTL of the registrations")
	f.DurationVar(&o.duration, "duration", 0, "stop after running this long, counted once the instances are registered (0: run until interrupted)")
	return cmd
}

func runDev(ctx context.Context, g *globals, o devOptions, out io.Writer) error {
	if o.instances < 1 || o.instances > 50 {
		return fmt.Errorf("--instances %d: want 1-50", o.instances)
	}
	if o.duration < 0 {
		return fmt.Errorf("--duration %s: want 0 or more", o.duration)
	}
	dir := o.dataDir
	if dir == "" {
		d, err := os.MkdirTemp("", "lodestar-dev-*")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	e, err := embedetcd.Start(startCtx, embedetcd.MemberConfig{
		Name: "dev", Dir: dir, ClientURL: o.clientURL, PeerURL: o.peerURL,
	})
	cancel()
	if err != nil {
		return err
	}
	defer e.Close()
	fmt.Fprintf(out, "etcd       embedded, clients at %s (data in %s)\n", o.clientURL, dir)

	cli, err := etcdclient.New(etcdclient.Config{Endpoints: []string{o.clientURL}})
	if err != nil {
		return err
	}
	defer cli.Close()

	say := logTo(out)
	reg, err := registry.New(cli, registry.WithPrefix(g.prefix), registry.WithTTL(o.ttl),
		registry.WithEventHandler(func(ev registry.Event) { say("registrar  %s", ev) }))
	if err != nil {
		return err
	}
	var servers []*grpc.Server
	var healths []*health.Server
	// Shut down as a server should: stop advertising (deregister, health
	// NOT_SERVING), then let calls in flight finish, then stop.
	defer func() {
		if err := reg.Close(); err != nil {
			say("registrar  %v", err)
		}
		for _, h := range healths {
			h.Shutdown()
		}
		for _, s := range servers {
			gracefulStop(s, 5*time.Second)
		}
	}()
	zones := []string{"zone-a", "zone-b", "zone-c"}
	for i := range o.instances {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("listen for instance %d: %w", i+1, err)
		}
		s := grpc.NewServer()
		hs := health.NewServer()
		hs.SetServingStatus(o.service, healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(s, hs)
		servers = append(servers, s)
		healths = append(healths, hs)
		go s.Serve(lis)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = reg.Register(rctx, registry.Instance{
			Service: o.service,
			Addr:    lis.Addr().String(),
			Metadata: registry.Metadata{
				Version: "v1.0.0", Region: "local", Zone: zones[i%len(zones)], Weight: 100 * (i%3 + 1),
			},
		})
		cancel()
		if err != nil {
			return fmt.Errorf("register instance %d: %w", i+1, err)
		}
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = listInstances(lctx, cli, g.prefix, "", out)
	cancel()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nwatching %s/ for changes. In another terminal: go run ./cmd/lodestar list --endpoints %s\n", strings.TrimRight(g.prefix, "/"), o.clientURL)
	if o.duration > 0 {
		fmt.Fprintf(out, "stopping in %s\n", o.duration)
	} else {
		fmt.Fprintln(out, "Ctrl-C stops everything and deregisters the instances.")
	}
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	err = watchChanges(ctx, cli, g.prefix, say)
	fmt.Fprintln(out, "stopping: deregistering instances, stopping servers and etcd")
	return err
}

// logTo returns a function printing one time-stamped line to out per
// call, safe for concurrent use. A line is escaped (text): it may hold
// keys, values and errors read from etcd.
func logTo(out io.Writer) func(format string, args ...any) {
	var mu sync.Mutex
	return func(format string, args ...any) {
		line := time.Now().Format("15:04:05.000") + "  " + text(fmt.Sprintf(format, args...))
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(out, line)
	}
}

// gracefulStop stops s, letting calls in flight finish for at most d.
func gracefulStop(s *grpc.Server, d time.Duration) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.Stop()
		<-done
	}
}

// watchChanges prints every change under prefix until ctx ends. Keys and
// values are etcd's, written by anyone: they are printed through cell,
// and say escapes whatever else a line holds.
func watchChanges(ctx context.Context, cli *clientv3.Client, prefix string, say func(string, ...any)) error {
	p := strings.TrimRight(prefix, "/") + "/"
	resp, err := cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	rev := resp.Header.Revision + 1
	for ctx.Err() == nil {
		for wr := range cli.Watch(clientv3.WithRequireLeader(ctx), p, clientv3.WithPrefix(), clientv3.WithRev(rev)) {
			if err := wr.Err(); err != nil {
				if errors.Is(err, context.Canceled) {
					break
				}
				if wr.CompactRevision > 0 {
					// History is gone: go on from the oldest revision left
					// (changes in between are not shown).
					say("watch      missed changes before revision %d (compacted); resuming from there", wr.CompactRevision)
					rev = wr.CompactRevision
				} else {
					say("watch      %v (resuming)", err)
				}
				break
			}
			for _, ev := range wr.Events {
				rev = ev.Kv.ModRevision + 1
				key := cell(string(ev.Kv.Key))
				if ev.Type == mvccpb.DELETE {
					say("etcd       DELETE %s", key)
					continue
				}
				addr, md, err := registry.Decode(ev.Kv.Value)
				if err != nil {
					say("etcd       PUT %s (unreadable: %v)", key, err)
					continue
				}
				say("etcd       PUT %s addr=%s status=%s weight=%d zone=%s", key, cell(addr), cell(string(md.Status)), md.Weight, cell(md.Zone))
			}
		}
		t := time.NewTimer(500 * time.Millisecond) // do not spin while etcd is away
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}
