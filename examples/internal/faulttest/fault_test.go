package faulttest

import (
	"context"
	"math"
	"net"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/registry"
)

// Timeouts that only bound a hang: generous, so a loaded machine never
// meets them.
const (
	testTimeout = 5 * time.Minute
	stepTimeout = time.Minute
)

const service = "user"

// callDelay is the time each call spends in the servers' handlers, so
// that calls are in flight on the servers when they are killed or stopped.
const callDelay = 5 * time.Millisecond

var servingLine = regexp.MustCompile(`UserService serving at (\S+) `)

// TestProcessFaults runs a `lodestar etcd` member and three UserService
// servers as processes, and a lodestar client in the test calling GetUser
// (idempotent) and CreateUser (not) back to back, while:
//
//  1. one server is killed with SIGKILL;
//  2. one gets SIGTERM and is started again on the same address;
//  3. the etcd member is killed with SIGKILL, stays away until every live
//     server has noticed its lease is lost, and is started again with its
//     data.
//
// No GetUser call may fail. A CreateUser call may fail only if it was on
// the wire to the killed server: sent to it and not answered when it was
// killed, or sent to it before the client saw its connection close.
// It logs how long each registration took to come back.
func TestProcessFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs processes; not with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	step := func() context.Context {
		c, cancel := context.WithTimeout(ctx, stepTimeout)
		t.Cleanup(cancel)
		return c
	}
	bins := build(ctx, t)

	clientURL := "http://" + freeAddr(t)
	etcdArgs := []string{"etcd", "--name", "n1", "--data-dir", filepath.Join(t.TempDir(), "n1.etcd"),
		"--client-url", clientURL, "--peer-url", "http://" + freeAddr(t)}
	etcd := start(ctx, t, "etcd", bins.lodestar, etcdArgs...)
	if _, err := etcd.waitLine(step(), " ready: clients at ", 0); err != nil {
		t.Fatal(err)
	}
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: []string{clientURL}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	prefix := registry.DefaultPrefix + "/" + service + "/"
	ks := watchKeys(t, cli, prefix)

	startServer := func(name string, args ...string) (*proc, string) {
		t.Helper()
		p := start(ctx, t, name, bins.server, append([]string{"--etcd", clientURL, "--ttl", "2s", "--delay", callDelay.String()}, args...)...)
		line, err := p.waitLine(step(), "UserService serving at ", 0)
		if err != nil {
			t.Fatal(err)
		}
		m := servingLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("%s: no address in %q", name, line)
		}
		return p, m[1]
	}
	var (
		procs [3]*proc
		addrs [3]string
	)
	for i := range procs {
		procs[i], addrs[i] = startServer([]string{"killed", "restarted", "steady"}[i])
		if _, err := ks.wait(step(), prefix+addrs[i], present); err != nil {
			t.Fatal(err)
		}
	}
	killed, restarted, steady := addrs[0], addrs[1], addrs[2]

	tr := newTracker()
	conn, err := lodestar.Dial(step(), service, lodestar.WithEtcdEndpoints(clientURL),
		lodestar.WithDialOptions(grpc.WithStatsHandler(tr)), lodestar.WithWaitForReady())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	l := startLoad(conn, 6, 4)
	t.Cleanup(l.stop)
	more := func(addr string, n int64) { // waits for n more calls answered by addr
		t.Helper()
		if err := l.waitServed(step(), addr, l.servedBy(addr)+n); err != nil {
			t.Fatalf("%v (load: %s)", err, l)
		}
	}
	for _, a := range addrs {
		more(a, 50)
	}

	// 1. SIGKILL: no drain, no deregistration; the key leaves with the
	// lease. Calls of both kinds are on the wire to it when it dies.
	if err := tr.waitOnWire(step(), "2 GetUser and 1 CreateUser to "+killed, func(on map[wireKey]int) bool {
		return on[wireKey{killed, getUser}] >= 2 && on[wireKey{killed, createUser}] >= 1
	}); err != nil {
		t.Fatal(err)
	}
	killMark := tr.mark()
	killedAt := time.Now()
	if err := procs[0].signal(step(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deathMark := tr.mark()
	expired, err := ks.wait(step(), prefix+killed, absent)
	if err != nil {
		t.Fatal(err)
	}
	more(restarted, 100)
	more(steady, 100)
	afterKill := l.String()

	// 2. SIGTERM: drain, deregister, exit; then the same address again.
	if err := procs[1].signal(step(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if procs[1].err != nil {
		t.Errorf("SIGTERM: server exited with %v, want a clean exit", procs[1].err)
	}
	if _, err := ks.wait(step(), prefix+restarted, absent); err != nil {
		t.Fatal(err)
	}
	more(steady, 100)
	procs[1], _ = startServer("restarted (again)", "--listen", restarted)
	back, err := ks.wait(step(), prefix+restarted, present)
	if err != nil {
		t.Fatal(err)
	}
	restartTook := back.Sub(procs[1].started)
	more(restarted, 100)
	afterRestart := l.String()

	// 3. etcd killed; started again with its data once both live servers
	// have noticed their leases are lost.
	live := []struct {
		p    *proc
		addr string
	}{{procs[1], restarted}, {procs[2], steady}}
	var from [2]int
	var oldLease [2]clientv3.LeaseID
	for i, s := range live {
		from[i] = s.p.out.len()
		lease, ok := ks.leaseOf(prefix + s.addr)
		if !ok {
			t.Fatalf("%s not in etcd before etcd's kill", s.addr)
		}
		oldLease[i] = lease
	}
	if err := etcd.signal(step(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i, s := range live {
		if _, err := s.p.waitLine(step(), "registry: lease-lost", from[i]); err != nil {
			t.Fatal(err)
		}
	}
	etcd = start(ctx, t, "etcd (restarted)", bins.lodestar, etcdArgs...)
	if _, err := etcd.waitLine(step(), " ready: clients at ", 0); err != nil {
		t.Fatal(err)
	}
	etcdReady := time.Now()
	var rereg [2]time.Duration
	for i, s := range live {
		line, err := s.p.waitLine(step(), "registry: re-registered", from[i])
		if err != nil {
			t.Fatal(err)
		}
		rereg[i] = time.Since(etcdReady) // an upper bound: lines are read as they come
		t.Logf("%s: %s", s.addr, line)
		at, err := ks.wait(step(), prefix+s.addr, underNewLease(oldLease[i]))
		if err != nil {
			t.Fatal(err)
		}
		if d := at.Sub(etcdReady); d < rereg[i] {
			rereg[i] = d
		}
	}
	more(restarted, 100)
	more(steady, 100)
	l.stop()

	atKill, sentAfter := tr.createsOnWire(killed, killMark, math.MaxUint64)
	atDeath, _ := tr.createsOnWire(killed, deathMark, math.MaxUint64)
	t.Logf("load: after the SIGKILL %s; after the SIGTERM and restart %s; at the end %s", afterKill, afterRestart, l)
	t.Logf("SIGKILL: %d CreateUser calls on the wire to the killed server at the kill, %d sent to it after the kill signal (%d on the wire once its exit was seen); its key left etcd %v after the kill (TTL 2s)",
		atKill, sentAfter, atDeath, expired.Sub(killedAt).Round(time.Millisecond))
	t.Logf("SIGTERM and restart: the key was back %v after the new process started", restartTook.Round(time.Millisecond))
	t.Logf("etcd killed and restarted with its data: keys back under new leases %v and %v after etcd was ready",
		rereg[0].Round(time.Millisecond), rereg[1].Round(time.Millisecond))
	t.Logf("failed: %d idempotent (GetUser), %d non-idempotent (CreateUser)", l.getFails.Load(), l.createFails.Load())

	for _, c := range l.failures() {
		a, sent := tr.lastAttempt(c)
		switch {
		case c.method == getUser:
			t.Errorf("idempotent call failed (last attempt to %s): %s", a.addr, errShort(c.err))
		case !sent || a.addr != killed:
			t.Errorf("CreateUser failed on %q, not the killed server %s: %s", a.addr, killed, errShort(c.err))
		case a.ended < killMark:
			t.Errorf("CreateUser failed on the killed server before it was killed: %s", errShort(c.err))
		}
	}
	if n := l.createFails.Load(); n > int64(atKill+sentAfter) {
		t.Errorf("%d CreateUser calls failed, more than the %d on the wire to the killed server", n, atKill+sentAfter)
	}
}

// freeAddr returns a loopback address with a port free a moment ago, for
// a process that must be told its port (etcd's URLs are fixed across its
// restart).
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}
