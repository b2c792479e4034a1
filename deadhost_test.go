package lodestar_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/connectivity"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
)

// hostNet is a network namespace, held by a process of ours, joined to
// this one by a veth pair: a host that can vanish without closing its
// connections (its link goes down and its packets are dropped, as when a
// machine loses power or a network is cut).
type hostNet struct {
	holder *exec.Cmd
	peer   string // the veth end inside the namespace
	addr   string // its IPv4 address
}

// newHostNet makes one, or skips the test where the process may not
// (it needs CAP_SYS_ADMIN and CAP_NET_ADMIN, unshare, nsenter and ip).
func newHostNet(t *testing.T) *hostNet {
	t.Helper()
	for _, tool := range []string{"unshare", "nsenter", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: %v", tool, err)
		}
	}
	// The shell says when the namespace exists, then becomes a sleep
	// that holds it.
	holder := exec.Command("unshare", "--net", "--", "sh", "-c", "echo ready; exec sleep 3600")
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Skipf("unshare: %v", err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() }) // the namespace and its veth end go with it
	ready := make([]byte, len("ready\n"))
	if _, err := io.ReadFull(stdout, ready); err != nil {
		t.Skipf("unshare --net did not start: %v", err)
	}
	pid := strconv.Itoa(holder.Process.Pid)
	// A /30 of 198.18.0.0/15 (reserved for network tests) and interface
	// names of our own, by process id: a second copy of the suite running
	// alongside gets others.
	base := os.Getpid() % (1 << 15) << 2
	subnet := fmt.Sprintf("198.%d.%d.", 18+base>>16, base>>8&0xff)
	h := &hostNet{holder: holder, peer: fmt.Sprintf("lsp%d", os.Getpid()), addr: subnet + strconv.Itoa(base&0xff+2)}
	local := fmt.Sprintf("lsh%d", os.Getpid())
	if err := run("ip", "link", "add", local, "type", "veth", "peer", "name", h.peer, "netns", pid); err != nil {
		t.Skipf("cannot make a veth pair: %v", err)
	}
	t.Cleanup(func() { run("ip", "link", "del", local) })
	for _, args := range [][]string{
		{"ip", "addr", "add", subnet + strconv.Itoa(base&0xff+1) + "/30", "dev", local},
		{"ip", "link", "set", local, "up"},
		{"nsenter", "-t", pid, "-n", "ip", "addr", "add", h.addr + "/30", "dev", h.peer},
		{"nsenter", "-t", pid, "-n", "ip", "link", "set", h.peer, "up"},
	} {
		if err := run(args...); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// listen returns a listener inside the namespace: the socket is made by
// a thread that joined it, and stays there when the thread comes back.
func (h *hostNet) listen(t *testing.T) net.Listener {
	t.Helper()
	type result struct {
		lis net.Listener
		err error
	}
	out := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // not unlocked if the thread cannot come back: it then ends with this goroutine
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			out <- result{err: err}
			return
		}
		defer self.Close()
		ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", h.holder.Process.Pid))
		if err != nil {
			out <- result{err: err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			out <- result{err: fmt.Errorf("setns: %w", err)}
			return
		}
		lis, lerr := net.Listen("tcp", net.JoinHostPort(h.addr, "0"))
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			if lis != nil {
				lis.Close()
			}
			out <- result{err: fmt.Errorf("setns back: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		out <- result{lis, lerr}
	}()
	r := <-out
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.lis
}

// cut takes the namespace's link down: from then on every packet to the
// host is dropped and none comes back, and no connection is closed.
func (h *hostNet) cut(t *testing.T) {
	t.Helper()
	if err := run("nsenter", "-t", strconv.Itoa(h.holder.Process.Pid), "-n", "ip", "link", "set", h.peer, "down"); err != nil {
		t.Fatal(err)
	}
}

// An instance whose host vanishes (no FIN, no RST: its packets are
// dropped) is noticed by a Dial connection with default options, with no
// call in progress to fail: its TCP keepalive probes go unanswered and the
// connection is closed, where grpc's own dialer would keep it for hours
// and Dial's HTTP/2 pings (every 5 minutes at most) would take minutes.
func TestDeadHostNoticed(t *testing.T) {
	t.Parallel()
	h := newHostNet(t)
	c := etcdtest.New(t)
	srv, err := lodestar.NewServer("greeter", lodestar.WithEtcdEndpoints(c.Endpoints()...), lodestar.WithTTL(2*time.Second),
		lodestar.WithStopTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	g := newHoldGreeter()
	g.open()
	greeterpb.RegisterGreeterServer(srv, g)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.ServeListener(ctx, h.listen(t)) }()
	t.Cleanup(func() { cancel(); <-served })
	select {
	case <-srv.Ready():
	case err := <-served:
		served <- err
		t.Fatalf("serve: %v", err)
	}

	dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer dcancel()
	conn, err := lodestar.Dial(dctx, "greeter", lodestar.WithEtcdEndpoints(c.Endpoints()...), lodestar.WithWaitForReady())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := greeterpb.NewGreeterClient(conn).SayHello(dctx, &greeterpb.HelloRequest{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	if s := conn.GetState(); s != connectivity.Ready {
		t.Fatalf("connection %v after a call, want READY", s)
	}
	h.cut(t)
	start := time.Now()
	const bound = 90 * time.Second // well past the ~20 s expected, well short of 5 minutes
	wctx, wcancel := context.WithTimeout(context.Background(), bound)
	defer wcancel()
	if !conn.WaitForStateChange(wctx, connectivity.Ready) {
		t.Fatalf("the connection to a vanished host was still READY after %v", bound)
	}
	t.Logf("vanished host noticed after %v: connection %v", time.Since(start).Round(time.Millisecond), conn.GetState())
}
