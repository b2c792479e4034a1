package registry_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/registry"
)

// childEnv names the etcd endpoint when the test binary runs as a
// registering child process (see TestKilledProcessExpiresAfterTTL).
const childEnv = "LODESTAR_REGISTRY_TEST_CHILD_ENDPOINT"

// runChild registers one instance, says so on stdout, and waits to be
// killed.
func runChild(endpoint string) {
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: []string{endpoint}})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	r, err := registry.New(cli, registry.WithTTL(2*time.Second))
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	key, err := r.Register(ctx, registry.Instance{Service: "user", Addr: "127.0.0.1:20001"})
	cancel()
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("registered", key)
	<-time.After(time.Minute) // killed long before
	os.Exit(2)
}

// TestKilledProcessExpiresAfterTTL: a registering process killed with
// SIGKILL (no Close, no revoke) leaves etcd within about one TTL.
func TestKilledProcessExpiresAfterTTL(t *testing.T) {
	c := etcdtest.New(t)
	cli := c.Client(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+c.Endpoints()[0])
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "registered ") || strings.HasPrefix(sc.Text(), "error:") {
				lines <- sc.Text()
				return
			}
		}
		close(lines)
	}()
	var key string
	select {
	case l, ok := <-lines:
		if !ok || !strings.HasPrefix(l, "registered ") {
			t.Fatalf("child: %q", l)
		}
		key = strings.TrimPrefix(l, "registered ")
	case <-time.After(30 * time.Second):
		t.Fatal("child did not register")
	}
	kv := mustGet(t, cli, key)
	if kv == nil {
		t.Fatalf("%s not in etcd", key)
	}
	wch := cli.Watch(ctxT(t, 15*time.Second), key, clientv3.WithRev(kv.ModRevision+1))
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitExpired(t, wch, time.Now(), "the process was killed")
}
