// Package embedetcd starts embedded etcd members in-process with
// go.etcd.io/etcd/server/v3/embed.
//
// Every member listens on 127.0.0.1 only: Start refuses client, peer and
// initial-cluster URLs that name any other address. etcd's own zap logging is
// silenced unless a logger is given.
//
// Start brings up one member of a new or an existing cluster and returns once
// it is ready to serve (or closes it again on failure). FreePorts picks
// loopback ports for it, and SingleConfig/StartSingle build a one-member
// cluster for a development command.
package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Defaults applied by Start to zero fields of MemberConfig.
const (
	DefaultTickMs       = 100  // heartbeat interval in milliseconds
	DefaultElectionMs   = 1000 // election timeout in milliseconds
	DefaultClusterToken = "lodestar-etcd"

	// Host is the only address members listen on and advertise.
	Host = "127.0.0.1"
)

// Cluster states for MemberConfig.ClusterState.
const (
	ClusterStateNew      = embed.ClusterStateFlagNew      // "new"
	ClusterStateExisting = embed.ClusterStateFlagExisting // "existing"
)

// MemberConfig describes one etcd member. Name, Dir, ClientURL and PeerURL are
// required; the URLs must have the form http://127.0.0.1:port with a non-zero
// port (see URL).
type MemberConfig struct {
	Name string // member name, unique in the cluster
	Dir  string // data directory; created by etcd if missing

	ClientURL string // listen and advertise URL for clients
	// ListenClientURL, if set, is where the member listens for clients
	// while ClientURL is only advertised (for a forwarder in front of it).
	ListenClientURL string
	PeerURL         string // advertised URL for peers; also listened on by default
	// ListenPeerURL, if set, is where the peer listener binds instead of
	// PeerURL, for when something such as a TCP forwarder listening on
	// PeerURL relays peer traffic to it.
	ListenPeerURL string

	// InitialCluster lists every member as name=peerURL, comma-separated.
	// Empty means a one-member cluster: Name=PeerURL. It is only used when
	// Dir holds no data yet.
	InitialCluster string
	// ClusterState is ClusterStateNew (default) to bootstrap a new cluster or
	// ClusterStateExisting to join one this member was added to
	// (MemberAdd). Only used when Dir holds no data yet.
	ClusterState string
	// ClusterToken identifies the cluster at bootstrap; default
	// DefaultClusterToken.
	ClusterToken string

	TickMs     uint // heartbeat interval; 0 means DefaultTickMs
	ElectionMs uint // election timeout; 0 means DefaultElectionMs

	// DisableStrictReconfigCheck turns off etcd's quorum-safety checks on
	// membership changes (--strict-reconfig-check=false). With the checks on,
	// etcd rejects MemberAdd until the serving member has been connected to
	// a quorum for 5 s, which makes tests that replace members slow.
	DisableStrictReconfigCheck bool
	// UnsafeNoFsync skips fsync of the WAL and backend (--unsafe-no-fsync).
	// Data survives Close and restart in the same process, not a machine
	// crash. For tests only.
	UnsafeNoFsync bool

	// MaxRequestBytes is the largest request the member accepts
	// (--max-request-bytes); 0 means etcd's default, 1.5 MiB.
	MaxRequestBytes uint

	// AnyHost lets the URLs name hosts other than 127.0.0.1, for members an
	// operator starts on real machines (the lodestar etcd command). Tests
	// leave it false so that nothing they start leaves loopback.
	AnyHost bool

	// ClientTLS, if set, serves clients over TLS (https:// client URLs),
	// and with ClientCertAuth requires client certificates.
	ClientTLS *ClientTLS

	// Logger receives etcd's server logs; nil discards them.
	Logger *zap.Logger
}

// ClientTLS names the PEM files of a member's client TLS.
type ClientTLS struct {
	CertFile, KeyFile string
	TrustedCAFile     string // CA of client certificates
	ClientCertAuth    bool   // require client certificates
}

// URL returns "http://127.0.0.1:port".
func URL(port int) string {
	return "http://" + net.JoinHostPort(Host, strconv.Itoa(port))
}

// Start starts the member described by cfg and waits, bounded by ctx, until
// it is ready to serve client requests. A member of a multi-member cluster
// only becomes ready once a quorum is up, so members of a new cluster must be
// started concurrently. On any failure Start closes what it started and
// returns an error (wrapping ctx.Err() if ctx ended first).
//
// The caller owns the returned server and must call its Close method; Close
// leaves the data directory in place. Close is graceful: a leader first hands
// leadership over (waiting up to 5 s plus two election timeouts for a
// transferee), client requests are drained for as long, and peer connections
// for up to 1 s. Calling e.Server.HardStop() before Close skips the
// leadership transfer, as in a crash.
func Start(ctx context.Context, cfg MemberConfig) (*embed.Etcd, error) {
	ec, err := cfg.embedConfig()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("embedetcd: start %s: %w", cfg.Name, err)
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: start %s: %w", cfg.Name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err = <-e.Err():
		err = fmt.Errorf("embedetcd: %s failed before it was ready: %w", cfg.Name, err)
	case <-e.Server.StopNotify():
		err = fmt.Errorf("embedetcd: %s stopped before it was ready", cfg.Name)
	case <-ctx.Done():
		err = fmt.Errorf("embedetcd: %s not ready: %w", cfg.Name, ctx.Err())
	}
	// Stop raft first so that Close does not try to hand leadership over.
	e.Server.HardStop()
	e.Close()
	return nil, err
}

// embedConfig validates cfg and translates it into an embed.Config.
func (cfg MemberConfig) embedConfig() (*embed.Config, error) {
	if cfg.Name == "" || cfg.Dir == "" {
		return nil, errors.New("embedetcd: member Name and Dir are required")
	}
	clientScheme := "http"
	if cfg.ClientTLS != nil {
		clientScheme = "https"
	}
	curl, err := parseMemberURL(cfg.AnyHost, cfg.ClientURL, clientScheme)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: %s: client URL: %w", cfg.Name, err)
	}
	purl, err := parseMemberURL(cfg.AnyHost, cfg.PeerURL, "http")
	if err != nil {
		return nil, fmt.Errorf("embedetcd: %s: peer URL: %w", cfg.Name, err)
	}
	lcurl := curl
	if cfg.ListenClientURL != "" {
		if lcurl, err = parseMemberURL(cfg.AnyHost, cfg.ListenClientURL, clientScheme); err != nil {
			return nil, fmt.Errorf("embedetcd: %s: listen client URL: %w", cfg.Name, err)
		}
	}
	lpurl := purl
	if cfg.ListenPeerURL != "" {
		if lpurl, err = parseMemberURL(cfg.AnyHost, cfg.ListenPeerURL, "http"); err != nil {
			return nil, fmt.Errorf("embedetcd: %s: listen peer URL: %w", cfg.Name, err)
		}
	}
	initial := cfg.InitialCluster
	if initial == "" {
		initial = cfg.Name + "=" + cfg.PeerURL
	}
	for _, entry := range strings.Split(initial, ",") {
		_, u, ok := strings.Cut(entry, "=")
		if !ok {
			return nil, fmt.Errorf("embedetcd: %s: initial cluster entry %q is not name=url", cfg.Name, entry)
		}
		if _, err := parseMemberURL(cfg.AnyHost, u, "http"); err != nil {
			return nil, fmt.Errorf("embedetcd: %s: initial cluster: %w", cfg.Name, err)
		}
	}
	state := cfg.ClusterState
	switch state {
	case "":
		state = ClusterStateNew
	case ClusterStateNew, ClusterStateExisting:
	default:
		return nil, fmt.Errorf("embedetcd: %s: cluster state %q is neither %q nor %q",
			cfg.Name, state, ClusterStateNew, ClusterStateExisting)
	}
	token := cfg.ClusterToken
	if token == "" {
		token = DefaultClusterToken
	}
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.Dir
	ec.ListenClientUrls = []url.URL{*lcurl}
	ec.AdvertiseClientUrls = []url.URL{*curl}
	ec.ListenPeerUrls = []url.URL{*lpurl}
	ec.AdvertisePeerUrls = []url.URL{*purl}
	ec.InitialCluster = initial
	ec.ClusterState = state
	ec.InitialClusterToken = token
	if cfg.MaxRequestBytes != 0 {
		ec.MaxRequestBytes = cfg.MaxRequestBytes
	}
	ec.TickMs = DefaultTickMs
	if cfg.TickMs != 0 {
		ec.TickMs = cfg.TickMs
	}
	ec.ElectionMs = DefaultElectionMs
	if cfg.ElectionMs != 0 {
		ec.ElectionMs = cfg.ElectionMs
	}
	if t := cfg.ClientTLS; t != nil {
		ec.ClientTLSInfo = transport.TLSInfo{CertFile: t.CertFile, KeyFile: t.KeyFile, TrustedCAFile: t.TrustedCAFile, ClientCertAuth: t.ClientCertAuth}
	}
	ec.StrictReconfigCheck = !cfg.DisableStrictReconfigCheck
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	// With a builder set, etcd builds no logger of its own (it would write
	// to stderr); LogOutputs is then irrelevant.
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	return ec, nil
}

// parseMemberURL accepts scheme://127.0.0.1:port with port > 0, or with
// anyHost scheme://host:port for any non-empty host.
func parseMemberURL(anyHost bool, s, scheme string) (*url.URL, error) {
	if anyHost {
		u, err := url.Parse(s)
		if err != nil {
			return nil, err
		}
		if u.Scheme != scheme || u.Hostname() == "" || (u.Path != "" && u.Path != "/") || u.User != nil {
			return nil, fmt.Errorf("%q is not %s://host:port", s, scheme)
		}
		if p, err := strconv.Atoi(u.Port()); err != nil || p <= 0 || p > 65535 {
			return nil, fmt.Errorf("%q has no valid port", s)
		}
		u.Path = ""
		return u, nil
	}
	return parseLoopbackURL(s, scheme)
}

// parseLoopbackURL accepts only scheme://127.0.0.1:port with port > 0.
func parseLoopbackURL(s, scheme string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Scheme != scheme || u.Hostname() != Host || (u.Path != "" && u.Path != "/") || u.User != nil {
		return nil, fmt.Errorf("%q is not %s://%s:port", s, scheme, Host)
	}
	if p, err := strconv.Atoi(u.Port()); err != nil || p <= 0 || p > 65535 {
		return nil, fmt.Errorf("%q has no valid port", s)
	}
	u.Path = ""
	return u, nil
}

// IsAddrInUse reports whether err (from Start) means that a port was already
// taken, in which case starting again on other ports may succeed.
func IsAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE)
}

// FreePorts returns n distinct TCP ports that were free on 127.0.0.1 when it
// checked. Another process can still take them before they are used; callers
// retry on IsAddrInUse.
//
// Ports are chosen at random below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range) when that range is known and leaves room:
// ports from the ephemeral range are also handed out as source ports of
// outgoing connections, so one of them, freed while a member is stopped,
// could be taken by an unrelated connection before the member restarts.
// Otherwise FreePorts falls back to ports the kernel assigns for port 0.
func FreePorts(n int) ([]int, error) {
	if n <= 0 {
		return nil, nil
	}
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	seen := make(map[int]bool, n)
	add := func(addr string) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return
		}
		p := l.Addr().(*net.TCPAddr).Port
		if seen[p] {
			l.Close()
			return
		}
		seen[p] = true
		listeners = append(listeners, l)
		ports = append(ports, p)
	}
	if lo, hi, ok := portBelowEphemeral(); ok {
		for tries := 0; len(ports) < n && tries < 50*n; tries++ {
			add(net.JoinHostPort(Host, strconv.Itoa(lo+rand.IntN(hi-lo))))
		}
	}
	for tries := 0; len(ports) < n && tries < 10*n; tries++ {
		add(net.JoinHostPort(Host, "0"))
	}
	if len(ports) < n {
		return nil, fmt.Errorf("embedetcd: found only %d of %d free ports on %s", len(ports), n, Host)
	}
	return ports, nil
}

// portBelowEphemeral returns the half-open range [lo, hi) of unprivileged
// ports below the ephemeral range, if the latter is known and the range
// holds at least 1000 ports.
func portBelowEphemeral() (lo, hi int, ok bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, false
	}
	first, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, 0, false
	}
	const start = 10000
	if first-start < 1000 {
		return 0, 0, false
	}
	return start, first, true
}

// SingleConfig returns the configuration of a one-member cluster named
// "dev" with data in dir, on free 127.0.0.1 ports and default timing.
// Adjust fields (ports, Logger) before passing it to Start as needed.
func SingleConfig(dir string) (MemberConfig, error) {
	ports, err := FreePorts(2)
	if err != nil {
		return MemberConfig{}, err
	}
	return MemberConfig{
		Name:      "dev",
		Dir:       dir,
		ClientURL: URL(ports[0]),
		PeerURL:   URL(ports[1]),
	}, nil
}

// StartSingle starts a one-member cluster with data in dir on free 127.0.0.1
// ports and silent logs, and returns it with its client endpoint
// (http://127.0.0.1:port). If dir is empty a new temporary directory is
// created; it is not removed, and e.Config().Dir names it. If the chosen
// ports are taken before etcd binds them, StartSingle tries again on others.
func StartSingle(ctx context.Context, dir string) (e *embed.Etcd, clientEndpoint string, err error) {
	if dir == "" {
		if dir, err = os.MkdirTemp("", "embedetcd-*"); err != nil {
			return nil, "", fmt.Errorf("embedetcd: %w", err)
		}
	}
	// A failure to bind happens before etcd writes to dir, so a retry starts
	// from the same state.
	for attempt := 1; ; attempt++ {
		cfg, cerr := SingleConfig(dir)
		if cerr != nil {
			return nil, "", cerr
		}
		e, err = Start(ctx, cfg)
		if err == nil {
			return e, cfg.ClientURL, nil
		}
		if attempt == 3 || !IsAddrInUse(err) {
			return nil, "", err
		}
	}
}
