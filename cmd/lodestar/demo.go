package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/examples/proto/userpb"
	"github.com/lodestar-rpc/lodestar/examples/user/usersvc"
	"github.com/lodestar-rpc/lodestar/internal/embedetcd"
	"github.com/lodestar-rpc/lodestar/registry"
	"github.com/lodestar-rpc/lodestar/security"
	"github.com/lodestar-rpc/lodestar/security/devcert"
)

type demoOptions struct {
	pace        time.Duration // time between events
	keepRunning bool
	tls         bool // mutual TLS between the client and the instances
}

func newDemoCmd() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Watch lodestar keep calls flowing while instances join, drain, die and etcd loses its leader",
		Long: `Start a 3-member embedded etcd cluster, three UserService instances and a
client making steady calls, then, one after another: a fourth instance
joins, one drains and leaves gracefully, one is killed without warning, and
etcd's leader is stopped. The screen shows which instance serves how many
calls, each event as it happens, and at the end the totals and how long
each event took to take effect. Everything runs in this process on
127.0.0.1 and stops by itself in under a minute.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.pace < 500*time.Millisecond {
				return fmt.Errorf("--pace %s: want at least 500ms", o.pace)
			}
			_, err := runDemo(cmd.Context(), o, cmd.OutOrStdout())
			return err
		},
	}
	cmd.Flags().DurationVar(&o.pace, "pace", 6*time.Second, "time between events")
	cmd.Flags().BoolVar(&o.keepRunning, "keep-running", false, "keep running after the last event, until Ctrl-C")
	cmd.Flags().BoolVar(&o.tls, "tls", false, "run the calls over mutual TLS, with a development CA made for the demo")
	return cmd
}

// demoInstance is one UserService instance of the demo.
type demoInstance struct {
	name   string
	zone   string
	srv    *lodestar.Server
	calls  atomic.Int64
	last   atomic.Int64 // unix nanos of the last call served
	first  atomic.Int64 // unix nanos of the first call served
	cancel context.CancelFunc
	done   chan error
	gone   atomic.Bool // stopped
}

// counted wraps the example service, counting the calls each instance serves.
type counted struct {
	*usersvc.Service
	in *demoInstance
}

func (c counted) note() {
	now := time.Now().UnixNano()
	c.in.calls.Add(1)
	c.in.last.Store(now)
	c.in.first.CompareAndSwap(0, now)
}

func (c counted) GetUser(ctx context.Context, r *userpb.UserRequest) (*userpb.UserResponse, error) {
	c.note()
	return c.Service.GetUser(ctx, r)
}

func (c counted) CreateUser(ctx context.Context, r *userpb.CreateUserRequest) (*userpb.UserResponse, error) {
	c.note()
	return c.Service.CreateUser(ctx, r)
}

// demoResult is what the demo measured, for its test.
type demoResult struct {
	calls, failed int64
	events        []demoEvent
}

type demoEvent struct {
	what   string
	took   time.Duration // time to take effect
	failed int64         // calls failed during the event
	note   string
}

type demo struct {
	out       io.Writer
	mu        sync.Mutex // serialises output
	start     time.Time
	endpoints []string
	members   []*embed.Etcd
	stopping  sync.WaitGroup // members being stopped in the background
	instances []*demoInstance
	serverTLS []lodestar.Option // WithTLS for instances, with --tls
	clientTLS []lodestar.Option // WithTLS for the client, with --tls
	calls     atomic.Int64
	failed    atomic.Int64
	lastErr   atomic.Value
}

func (d *demo) say(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "[%5.1fs] "+format+"\n", append([]any{time.Since(d.start).Seconds()}, args...)...)
}

func runDemo(ctx context.Context, o demoOptions, out io.Writer) (demoResult, error) {
	d := &demo{out: out, start: time.Now()}
	var res demoResult
	dir, err := os.MkdirTemp("", "lodestar-demo-*")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)

	fmt.Fprintln(out, "lodestar demo: 3 etcd members, UserService instances registered in etcd, one client calling them.")
	fmt.Fprintln(out, "Each line shows the time since start; 'calls' lines show how many calls each instance served in the last second.")
	fmt.Fprintln(out)
	if err := d.startEtcd(ctx, dir); err != nil {
		return res, err
	}
	defer d.stopEtcd()
	d.say("etcd       3-member cluster ready: %s", strings.Join(d.endpoints, " "))
	if o.tls {
		if err := d.makeCerts(dir); err != nil {
			return res, err
		}
		d.say("tls        mutual TLS on: development CA, a certificate for service user, one for client demo-client (in %s)", dir)
	}

	defer func() {
		for _, in := range d.instances {
			in.stop()
		}
	}()
	for i, zone := range []string{"zone-a", "zone-b", "zone-c"} {
		in, err := d.startInstance(ctx, fmt.Sprintf("user-%d", i+1), zone)
		if err != nil {
			return res, err
		}
		d.say("instance   %s started at %s (%s), registered under /services/user/", in.name, in.srv.Addr(), zone)
	}

	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	conn, err := lodestar.Dial(dctx, "user", append([]lodestar.Option{lodestar.WithEtcdEndpoints(d.endpoints...), lodestar.WithWaitForReady()}, d.clientTLS...)...)
	cancel()
	if err != nil {
		return res, err
	}
	defer conn.Close()
	d.say("client     dialled lodestar:///user; calling GetUser and CreateUser steadily")
	stopLoad := d.startLoad(conn)
	stopTicker := d.startTicker()

	wait := func(dur time.Duration) bool {
		t := time.NewTimer(dur)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	events := []func(context.Context) (demoEvent, error){d.join, d.drain, d.kill, d.stopLeader}
	for _, ev := range events {
		if !wait(o.pace) {
			break
		}
		e, err := ev(ctx)
		if err != nil {
			stopTicker()
			stopLoad()
			return res, err
		}
		res.events = append(res.events, e)
	}
	if o.keepRunning && ctx.Err() == nil {
		d.say("demo       all events done; running until Ctrl-C")
		<-ctx.Done()
	} else {
		wait(o.pace / 2)
	}
	stopTicker()
	stopLoad()
	res.calls, res.failed = d.calls.Load(), d.failed.Load()

	fmt.Fprintln(out)
	fmt.Fprintf(out, "Totals: %d calls made, %d failed.\n", res.calls, res.failed)
	for _, e := range res.events {
		fmt.Fprintf(out, "  %-42s took effect in %-8s failed calls: %d  %s\n", e.what, e.took.Round(time.Millisecond), e.failed, e.note)
	}
	if v := d.lastErr.Load(); v != nil {
		fmt.Fprintf(out, "  last error seen by the client: %v\n", v)
	}
	return res, nil
}

func (d *demo) startEtcd(ctx context.Context, dir string) error {
	ports, err := embedetcd.FreePorts(6)
	if err != nil {
		return err
	}
	var initial []string
	cfgs := make([]embedetcd.MemberConfig, 3)
	for i := range cfgs {
		name := fmt.Sprintf("etcd-%d", i+1)
		cfgs[i] = embedetcd.MemberConfig{Name: name, Dir: fmt.Sprintf("%s/%s", dir, name),
			ClientURL: embedetcd.URL(ports[2*i]), PeerURL: embedetcd.URL(ports[2*i+1])}
		initial = append(initial, name+"="+cfgs[i].PeerURL)
		d.endpoints = append(d.endpoints, cfgs[i].ClientURL)
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	d.members = make([]*embed.Etcd, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range cfgs {
		cfgs[i].InitialCluster = strings.Join(initial, ",")
		wg.Go(func() { d.members[i], errs[i] = embedetcd.Start(sctx, cfgs[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		d.stopEtcd()
		return err
	}
	return nil
}

func (d *demo) stopEtcd() {
	d.stopping.Wait()
	for _, m := range d.members {
		if m != nil {
			m.Close()
		}
	}
}

// makeCerts writes a development CA and certificates into dir and sets
// the TLS options of the instances and the client.
func (d *demo) makeCerts(dir string) error {
	ca, err := devcert.NewCA("lodestar demo CA", 24*time.Hour)
	if err != nil {
		return err
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		return err
	}
	files := map[string][2]string{}
	for name, req := range map[string]devcert.Request{
		"user":        {CommonName: "user", DNSNames: []string{"user"}, Server: true},
		"demo-client": {CommonName: "demo-client", Client: true},
	} {
		c, k, err := ca.Issue(req)
		if err != nil {
			return err
		}
		cf, kf, err := devcert.WriteFiles(dir, name, c, k)
		if err != nil {
			return err
		}
		files[name] = [2]string{cf, kf}
	}
	d.serverTLS = []lodestar.Option{lodestar.WithTLS(security.Config{CertFile: files["user"][0], KeyFile: files["user"][1], CAFile: caFile})}
	d.clientTLS = []lodestar.Option{lodestar.WithTLS(security.Config{CertFile: files["demo-client"][0], KeyFile: files["demo-client"][1], CAFile: caFile})}
	return nil
}

func (d *demo) startInstance(ctx context.Context, name, zone string) (*demoInstance, error) {
	in := &demoInstance{name: name, zone: zone, done: make(chan error, 1)}
	srv, err := lodestar.NewServer("user", append([]lodestar.Option{lodestar.WithEtcdEndpoints(d.endpoints...), lodestar.WithTTL(3 * time.Second),
		lodestar.WithMetadata(registry.Metadata{Zone: zone, Version: "v1.0.0"})}, d.serverTLS...)...)
	if err != nil {
		return nil, err
	}
	in.srv = srv
	userpb.RegisterUserServiceServer(srv, counted{Service: usersvc.New(name), in: in})
	sctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	go func() { in.done <- srv.Serve(sctx) }()
	select {
	case <-srv.Ready():
	case err := <-in.done:
		in.done <- err
		return nil, err
	case <-ctx.Done():
		in.stop()
		return nil, ctx.Err()
	}
	d.mu.Lock()
	d.instances = append(d.instances, in)
	d.mu.Unlock()
	return in, nil
}

// stop shuts the instance down gracefully if it still runs, and returns
// the result of its Serve.
func (in *demoInstance) stop() error {
	in.gone.Store(true)
	in.cancel()
	err := <-in.done
	in.done <- err
	return err
}

func (d *demo) startLoad(conn *lodestar.Conn) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	c := userpb.NewUserServiceClient(conn)
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
				var err error
				if (i+w)%4 == 0 {
					_, err = c.CreateUser(cctx, &userpb.CreateUserRequest{Name: "demo", Email: "demo@example.com"})
				} else {
					_, err = c.GetUser(cctx, &userpb.UserRequest{UserId: "user-1-1"})
				}
				ccancel()
				if ctx.Err() != nil {
					return
				}
				d.calls.Add(1)
				if err != nil {
					d.failed.Add(1)
					d.lastErr.Store(err.Error())
				}
				t := time.NewTimer(2 * time.Millisecond)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

// startTicker prints, every second, the calls each instance served.
func (d *demo) startTicker() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		prev := map[*demoInstance]int64{}
		var prevFailed int64
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			d.mu.Lock()
			ins := append([]*demoInstance(nil), d.instances...)
			d.mu.Unlock()
			var parts []string
			for _, in := range ins {
				n := in.calls.Load()
				if in.gone.Load() && n == prev[in] {
					parts = append(parts, fmt.Sprintf("%s  gone", in.name))
					continue
				}
				parts = append(parts, fmt.Sprintf("%s %5d", in.name, n-prev[in]))
				prev[in] = n
			}
			f := d.failed.Load()
			d.say("calls      %s   | failed %d", strings.Join(parts, "  "), f-prevFailed)
			prevFailed = f
		}
	}()
	return func() { cancel(); <-done }
}

// join starts a fourth instance and measures until it serves a call.
func (d *demo) join(ctx context.Context) (demoEvent, error) {
	e := demoEvent{what: "a 4th instance joins (zone-d)"}
	failed := d.failed.Load()
	start := time.Now()
	d.say("EVENT      a 4th instance, user-4, starts in zone-d")
	in, err := d.startInstance(ctx, "user-4", "zone-d")
	if err != nil {
		return e, err
	}
	for in.first.Load() == 0 {
		if ctx.Err() != nil || time.Since(start) > 20*time.Second {
			return e, errors.New("demo: the new instance never got a call")
		}
		sleepBrief()
	}
	e.took = time.Unix(0, in.first.Load()).Sub(start)
	e.note = "(start → registered → first call served)"
	e.failed = d.failed.Load() - failed
	d.say("effect     user-4 served its first call %s after it started", e.took.Round(time.Millisecond))
	return e, nil
}

// drain shuts user-2 down gracefully and measures until its last call.
func (d *demo) drain(ctx context.Context) (demoEvent, error) {
	e := demoEvent{what: "user-2 drains and leaves gracefully"}
	in := d.instances[1]
	failed := d.failed.Load()
	d.say("EVENT      user-2 shuts down gracefully: draining in etcd, NOT_SERVING, then stop and deregister")
	start := time.Now()
	if err := in.stop(); err != nil {
		return e, err
	}
	e.took = time.Unix(0, in.last.Load()).Sub(start)
	if e.took < 0 {
		e.took = 0
	}
	if n, err := d.registered(ctx, in); err != nil || n != 0 {
		return e, fmt.Errorf("demo: user-2 still registered after its shutdown (%v)", err)
	}
	e.note = fmt.Sprintf("(shutdown → its last call; the whole shutdown took %s)", time.Since(start).Round(time.Millisecond))
	if e.took == 0 {
		e.note = fmt.Sprintf("(no call reached it once the shutdown began; the shutdown took %s)", time.Since(start).Round(time.Millisecond))
	}
	e.failed = d.failed.Load() - failed
	if e.took == 0 {
		d.say("effect     user-2 got no new call after the shutdown began, and is gone from etcd")
	} else {
		d.say("effect     user-2 got its last call %s after the shutdown began, and is gone from etcd", e.took.Round(time.Millisecond))
	}
	return e, nil
}

// kill stops user-1 without warning: the client must stop using it at
// once, and etcd forgets it when its lease expires.
func (d *demo) kill(ctx context.Context) (demoEvent, error) {
	e := demoEvent{what: "user-1 is killed without warning"}
	in := d.instances[0]
	failed := d.failed.Load()
	d.say("EVENT      user-1 is killed: connections cut, no drain, its key left to expire with its lease")
	start := time.Now()
	in.srv.Stop()
	in.gone.Store(true)
	for {
		n, err := d.registered(ctx, in)
		if err == nil && n == 0 {
			break
		}
		if ctx.Err() != nil || time.Since(start) > 30*time.Second {
			return e, errors.New("demo: the killed instance never left etcd")
		}
		<-time.After(100 * time.Millisecond)
	}
	in.stop()
	e.took = time.Since(start)
	e.failed = d.failed.Load() - failed
	e.note = "(kill → its key expired from etcd, TTL 3s; the client stopped using it at once)"
	d.say("effect     user-1's key expired from etcd %s after the kill; %d calls failed meanwhile", e.took.Round(time.Millisecond), e.failed)
	return e, nil
}

// registered returns how many keys in etcd hold in's address (0 or 1).
func (d *demo) registered(ctx context.Context, in *demoInstance) (int, error) {
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: d.endpoints})
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := cli.Get(gctx, registry.Key(registry.DefaultPrefix, "user", in.srv.Addr()), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return int(resp.Count), nil
}

// stopLeader stops etcd's leader and measures until a new one is elected.
func (d *demo) stopLeader(ctx context.Context) (demoEvent, error) {
	e := demoEvent{what: "etcd's leader crashes"}
	failed := d.failed.Load()
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: d.endpoints})
	if err != nil {
		return e, err
	}
	defer cli.Close()
	leader := -1
	for i, ep := range d.endpoints {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.Status(sctx, ep)
		cancel()
		if err == nil && st.Leader == st.Header.MemberId {
			leader = i
		}
	}
	if leader < 0 {
		return e, errors.New("demo: no etcd leader found")
	}
	d.say("EVENT      etcd's leader, etcd-%d, crashes", leader+1)
	start := time.Now()
	m := d.members[leader]
	d.members[leader] = nil
	m.Server.HardStop() // a crash: no leadership hand-over
	d.stopping.Go(m.Close)
	for {
		if ctx.Err() != nil || time.Since(start) > 30*time.Second {
			return e, errors.New("demo: no new etcd leader")
		}
		found := false
		for i, ep := range d.endpoints {
			if i == leader {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			st, err := cli.Status(sctx, ep)
			cancel()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				found = true
			}
		}
		if found {
			break
		}
		sleepBrief()
	}
	e.took = time.Since(start)
	e.failed = d.failed.Load() - failed
	e.note = "(crash → new leader; calls do not go through etcd)"
	kept := 0
	for _, in := range d.instances {
		if in.gone.Load() {
			continue
		}
		n, err := d.registered(ctx, in)
		if err != nil {
			return e, err
		}
		kept += n
	}
	d.say("effect     a new etcd leader was elected %s later; %d running instances still registered", e.took.Round(time.Millisecond), kept)
	return e, nil
}

func sleepBrief() { <-time.After(10 * time.Millisecond) }
