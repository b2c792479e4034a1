// Package etcdtest runs real embedded etcd clusters (one process, members on
// 127.0.0.1) for tests, built on internal/embedetcd, and a loopback TCP proxy
// that can cut a client off from etcd.
//
// New starts a cluster and registers a t.Cleanup that stops every member and
// removes its data. Members keep their client and peer URLs for the life of
// the cluster, so Stop/Restart simulate a crashed and recovered server,
// RestartWiped a server that lost its disk, and RestartEmpty one that lost
// its disk and kept its configuration (so its cluster id). Members run
// with a 50 ms
// heartbeat and a 500 ms election timeout, so a leader is re-elected within
// about a second.
//
// Peer (raft) traffic passes through a forwarder per member that owns the
// member's advertised peer URL: on Stop and at cleanup it cuts all peer
// connections of the member at once. Without it, etcd's peer HTTP
// connections linger for up to 5 s after the members are closed (etcd sets a
// 5 s read deadline on every read, which defeats net/http's aborting of its
// background read), and goleak reports them.
//
// All operations are bounded in time; the ones taking a testing.TB fail the
// test (t.Fatal) rather than return errors, and must therefore be called from
// the test's goroutine.
package etcdtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/lodestar-rpc/lodestar/internal/embedetcd"
)

const (
	tickMs     = 50
	electionMs = 500

	startTimeout = 30 * time.Second // one attempt to start the cluster or a member
	stopTimeout  = 30 * time.Second // embed.Etcd.Close; bounded by etcd itself well below this
	opTimeout    = 30 * time.Second // Leader lookup in StopLeader, membership changes
	startRetries = 3                // attempts on fresh ports when a port was taken
	pollInterval = 10 * time.Millisecond
	dialTimeout  = 5 * time.Second
)

// Option configures New.
type Option func(*options)

type options struct {
	members         int
	maxRequestBytes uint
	logger          *zap.Logger
	tls             *embedetcd.ClientTLS
	cliTLS          *tls.Config
}

// ClientTLS serves clients over TLS with server's files (its certificate
// must name 127.0.0.1) and has Client use cli.
func ClientTLS(server embedetcd.ClientTLS, cli *tls.Config) Option {
	return func(o *options) { o.tls, o.cliTLS = &server, cli }
}

// Members sets the number of members (default 1).
func Members(n int) Option { return func(o *options) { o.members = n } }

// MaxRequestBytes sets the largest request the members accept (etcd's
// default is 1.5 MiB), for tests of values larger than that.
func MaxRequestBytes(n uint) Option { return func(o *options) { o.maxRequestBytes = n } }

// Logger sends the members' etcd server logs to lg (default: discarded),
// e.g. zaptest.NewLogger(t) when debugging.
func Logger(lg *zap.Logger) Option { return func(o *options) { o.logger = lg } }

// Cluster is a running embedded etcd cluster.
type Cluster struct {
	dir     string
	token   string
	logger  *zap.Logger
	tls     *embedetcd.ClientTLS
	cliTLS  *tls.Config
	maxReq  uint // MaxRequestBytes
	members []*Member

	mu    sync.Mutex // guards wipes
	wipes int
}

// Member is one etcd member of a Cluster. Its methods are safe for
// concurrent use; operations on the same member are serialised.
type Member struct {
	c    *Cluster
	name string
	dir  string // data directory
	fwd  *Proxy // listens on peerURL, forwards to the etcd peer listener
	cfwd *Proxy // listens on clientURL, forwards to the etcd client listener
	// Set when the cluster starts, fixed once New returns.
	clientURL string
	peerURL   string

	opMu sync.Mutex // serialises Stop/Restart/RestartWiped

	mu         sync.Mutex // guards the fields below
	cfg        embedetcd.MemberConfig
	etcd       *embed.Etcd // nil while stopped
	listenPeer string      // host:port of the etcd peer listener, "" while stopped
	listenCli  string      // host:port of the etcd client listener, "" while stopped
	readyAt    time.Time
}

// New starts a cluster and waits until every member is ready. It registers a
// cleanup that stops all members and removes their data directories. It calls
// t.Fatal on error.
func New(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	o := options{members: 1}
	for _, opt := range opts {
		opt(&o)
	}
	if o.members < 1 {
		t.Fatalf("etcdtest: Members(%d): need at least 1", o.members)
	}
	dir, err := os.MkdirTemp("", "etcdtest-*")
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	c := &Cluster{
		dir:    dir,
		token:  "etcdtest-" + filepath.Base(dir),
		logger: o.logger,
		tls:    o.tls,
		maxReq: o.maxRequestBytes,
		cliTLS: o.cliTLS,
	}
	t.Cleanup(func() {
		if err := c.stopAll(); err != nil {
			t.Error(err)
		}
		for _, m := range c.members {
			m.fwd.Close()
			m.cfwd.Close()
		}
		if err := os.RemoveAll(c.dir); err != nil {
			t.Errorf("etcdtest: %v", err)
		}
	})
	for i := range o.members {
		name := "m" + strconv.Itoa(i)
		m := &Member{c: c, name: name, dir: filepath.Join(dir, name)}
		// The forwarder holds its port for the life of the cluster, so a
		// kernel-assigned one is safe.
		ln, err := net.Listen("tcp", net.JoinHostPort(embedetcd.Host, "0"))
		if err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
		m.peerURL = "http://" + ln.Addr().String()
		m.fwd = newProxy(ln, m.peerTarget)
		// Clients reach the member through a forwarder too, so that Stop
		// cuts their connections at once, as a crash would, instead of
		// etcd draining open streams (watches) for seconds.
		cln, err := net.Listen("tcp", net.JoinHostPort(embedetcd.Host, "0"))
		if err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
		m.clientURL = c.clientScheme() + "://" + cln.Addr().String()
		m.cfwd = newProxy(cln, m.clientTarget)
		c.members = append(c.members, m)
	}

	for attempt := 1; ; attempt++ {
		err := c.startAll()
		if err == nil {
			return c
		}
		if attempt == startRetries || !embedetcd.IsAddrInUse(err) {
			t.Fatalf("etcdtest: starting %d-member cluster: %v", len(c.members), err)
		}
		// A client port was taken between choosing and binding it: wipe
		// what the other members bootstrapped and try new ports.
		for _, m := range c.members {
			if err := os.RemoveAll(m.dir); err != nil {
				t.Fatalf("etcdtest: %v", err)
			}
		}
	}
}

// startAll assigns fresh client ports to all members and starts them
// concurrently. On error every member is stopped again.
func (c *Cluster) startAll() error {
	var initial []string
	for _, m := range c.members {
		initial = append(initial, m.name+"="+m.peerURL)
	}
	for _, m := range c.members {
		m.mu.Lock()
		m.cfg = c.memberConfig(m, strings.Join(initial, ","), embedetcd.ClusterStateNew, c.token)
		m.mu.Unlock()
	}

	// Members of a new cluster only become ready together (publishing
	// themselves needs a quorum), so start them concurrently, and give up on
	// all of them as soon as one fails.
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	errs := make([]error, len(c.members))
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Go(func() {
			if errs[i] = m.start(ctx); errs[i] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	// Report the root cause, not the cancellations it caused.
	var first error
	for _, err := range errs {
		if err != nil && (first == nil || errors.Is(first, context.Canceled)) {
			first = err
		}
	}
	if first != nil {
		if err := c.stopAll(); err != nil {
			return fmt.Errorf("%w (and stopping: %v)", first, err)
		}
	}
	return first
}

func (c *Cluster) memberConfig(m *Member, initial, state, token string) embedetcd.MemberConfig {
	return embedetcd.MemberConfig{
		Name:                       m.name,
		Dir:                        m.dir,
		ClientURL:                  m.clientURL,
		PeerURL:                    m.peerURL,
		InitialCluster:             initial,
		ClusterState:               state,
		ClusterToken:               token,
		TickMs:                     tickMs,
		ElectionMs:                 electionMs,
		DisableStrictReconfigCheck: true,
		UnsafeNoFsync:              true,
		MaxRequestBytes:            c.maxReq,
		ClientTLS:                  c.tls,
		Logger:                     c.logger,
	}
}

func (c *Cluster) clientScheme() string {
	if c.tls != nil {
		return "https"
	}
	return "http"
}

// TLS returns the client TLS configuration given to ClientTLS, or nil.
func (c *Cluster) TLS() *tls.Config { return c.cliTLS }

// stopAll stops all running members concurrently.
func (c *Cluster) stopAll() error {
	errs := make([]error, len(c.members))
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Go(func() {
			m.opMu.Lock()
			defer m.opMu.Unlock()
			errs[i] = m.stop()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Size returns the number of members, running or not.
func (c *Cluster) Size() int { return len(c.members) }

// Member returns the i-th member (0-based, in creation order).
func (c *Cluster) Member(i int) *Member { return c.members[i] }

// Endpoints returns the client URLs of all members, in member order,
// including stopped ones.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.Endpoint()
	}
	return eps
}

// Client returns a client to all members' endpoints, closed at cleanup.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return newClientTLS(t, c.Endpoints(), c.cliTLS)
}

// Proxies returns a new proxy in front of each member, in member order, all
// closed at cleanup. Pausing all of them cuts a client built on their
// endpoints off from the whole cluster.
func (c *Cluster) Proxies(t testing.TB) []*Proxy {
	t.Helper()
	ps := make([]*Proxy, len(c.members))
	for i, m := range c.members {
		ps[i] = NewProxy(t, m.Endpoint())
	}
	return ps
}

func newClient(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	return newClientTLS(t, endpoints, nil)
}

func newClientTLS(t testing.TB, endpoints []string, tc *tls.Config) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: dialTimeout,
		TLS:         tc,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcdtest: client to %v: %v", endpoints, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Leader returns the member that is the current leader, waiting (bounded by
// ctx) while there is none. A running member counts as leader once it
// considers itself leader and enough running members to form a quorum of the
// whole cluster agree.
func (c *Cluster) Leader(ctx context.Context) (*Member, error) {
	// etcd has no event for "a quorum agrees on a leader", so poll.
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		if m := c.leader(); m != nil {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("etcdtest: no leader: %w", ctx.Err())
		case <-ticker.C:
		}
	}
}

func (c *Cluster) leader() *Member {
	votes := make(map[uint64]int)
	self := make(map[uint64]*Member)
	for _, m := range c.members {
		e := m.server()
		if e == nil {
			continue
		}
		lead, id := uint64(e.Server.Leader()), uint64(e.Server.MemberID())
		if lead == 0 {
			continue
		}
		votes[lead]++
		if lead == id {
			self[id] = m
		}
	}
	for id, m := range self {
		if votes[id] >= len(c.members)/2+1 {
			return m
		}
	}
	return nil
}

// StopLeader finds the leader (waiting for one if needed), stops it and
// returns it.
func (c *Cluster) StopLeader(t testing.TB) *Member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	m, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m.Stop(t)
	return m
}

// WaitHealthy waits, bounded by ctx, until all running members agree on a
// leader that is one of them and a linearizable Get succeeds on each of
// them. It fails at once if no member is running.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	var last error
	for {
		var running []*Member
		for _, m := range c.members {
			if m.Running() {
				running = append(running, m)
			}
		}
		if len(running) == 0 {
			return errors.New("etcdtest: no member is running")
		}
		if last = c.checkHealthy(ctx, running); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcdtest: cluster not healthy: %w (last: %v)", ctx.Err(), last)
		case <-ticker.C:
		}
	}
}

func (c *Cluster) checkHealthy(ctx context.Context, running []*Member) error {
	var lead uint64
	leaderRunning := false
	for _, m := range running {
		e := m.server()
		if e == nil {
			return fmt.Errorf("%s stopped", m.name)
		}
		l := uint64(e.Server.Leader())
		switch {
		case l == 0:
			return fmt.Errorf("%s has no leader", m.name)
		case lead != 0 && l != lead:
			return fmt.Errorf("members disagree on the leader (%x, %x)", lead, l)
		}
		lead = l
		if l == uint64(e.Server.MemberID()) {
			leaderRunning = true
		}
	}
	if !leaderRunning {
		return fmt.Errorf("leader %x is not running", lead)
	}
	for _, m := range running {
		if err := linearizableGet(ctx, m.Endpoint()); err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
	}
	return nil
}

func linearizableGet(ctx context.Context, endpoint string) error {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: dialTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = cli.Get(ctx, "etcdtest-health")
	return err
}

// Name returns the member's name (m0, m1, ...).
func (m *Member) Name() string { return m.name }

// Endpoint returns the member's client URL, http://127.0.0.1:port. It stays
// the same across restarts.
func (m *Member) Endpoint() string { return m.clientURL }

// Running reports whether the member is started and was ready.
func (m *Member) Running() bool { return m.server() != nil }

// ReadyAt returns when the member's last start or restart became ready.
func (m *Member) ReadyAt() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.readyAt
}

func (m *Member) server() *embed.Etcd {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.etcd
}

// clientTarget is the client forwarder's target: the running etcd's client
// listener.
func (m *Member) clientTarget() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.listenCli
}

// peerTarget is the forwarder's target: the running etcd's peer listener.
func (m *Member) peerTarget() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.listenPeer
}

// start starts the member with m.cfg, its peer listener on a fresh port
// behind the forwarder, and records it as running once ready. If the port is
// taken before etcd binds it, start tries others.
func (m *Member) start(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		ports, err := embedetcd.FreePorts(2)
		if err != nil {
			return err
		}
		listen, listenCli := embedetcd.URL(ports[0]), embedetcd.URL(ports[1])
		m.mu.Lock()
		cfg := m.cfg
		cfg.ListenPeerURL = listen
		cfg.ListenClientURL = listenCli
		if cfg.ClientTLS != nil {
			cfg.ListenClientURL = "https://" + strings.TrimPrefix(listenCli, "http://")
		}
		m.listenPeer = strings.TrimPrefix(listen, "http://")
		m.listenCli = strings.TrimPrefix(listenCli, "http://")
		m.mu.Unlock()

		e, err := embedetcd.Start(ctx, cfg)
		m.mu.Lock()
		if err == nil {
			m.etcd, m.readyAt = e, time.Now()
		} else {
			m.listenPeer, m.listenCli = "", ""
		}
		m.mu.Unlock()
		if err == nil {
			return nil
		}
		m.fwd.Reset() // connections to the failed instance
		m.cfwd.Reset()
		if attempt == startRetries || !embedetcd.IsAddrInUse(err) {
			return err
		}
	}
}

// stop stops the member abruptly, if it runs: without handing leadership
// over, as in a crash. The member counts as stopped from the moment stop is
// called.
func (m *Member) stop() error {
	m.mu.Lock()
	e := m.etcd
	m.etcd, m.listenPeer, m.listenCli = nil, "", "" // the forwarders refuse new connections
	m.mu.Unlock()
	if e == nil {
		return nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A graceful Close would first hand leadership over, waiting up to
		// 6 s for a transferee that may be stopping too.
		e.Server.HardStop()
		// Cut the member's peer connections, so that Close does not wait
		// for them and none linger afterwards.
		m.fwd.Reset()
		// Cut client connections too: etcd would otherwise wait for open
		// streams to drain, as no crashed process does.
		m.cfwd.Reset()
		// Close releases the listeners, client connections and files.
		e.Close()
	}()
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-done:
		return nil
	case <-timer.C:
		return fmt.Errorf("etcdtest: %s did not stop within %v", m.name, stopTimeout)
	}
}

// retry calls f with a per-attempt timeout until it reports done, or ctx
// ends.
func retry(ctx context.Context, f func(context.Context) (done bool, err error)) error {
	ticker := time.NewTicker(5 * pollInterval)
	defer ticker.Stop()
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		done, err := f(actx)
		cancel()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-ticker.C:
		}
	}
}
