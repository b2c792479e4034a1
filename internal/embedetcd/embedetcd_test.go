package embedetcd

import (
	"context"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

func TestStartSingle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, ep, err := StartSingle(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := e.Config().Dir
	defer os.RemoveAll(dir)
	defer e.Close()
	if !strings.HasPrefix(ep, "http://127.0.0.1:") {
		t.Fatalf("endpoint %q", ep)
	}

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("Get = %v, %v", resp, err)
	}
}

func TestStartRejectsNonLoopback(t *testing.T) {
	base := MemberConfig{Name: "x", Dir: t.TempDir(), ClientURL: URL(1), PeerURL: URL(2)}
	if _, err := base.embedConfig(); err != nil {
		t.Fatalf("base config: %v", err)
	}
	for _, mod := range []func(*MemberConfig){
		func(c *MemberConfig) { c.ClientURL = "http://0.0.0.0:2379" },
		func(c *MemberConfig) { c.PeerURL = "http://localhost:2380" },
		func(c *MemberConfig) { c.ListenPeerURL = "http://10.0.0.1:2380" },
		func(c *MemberConfig) { c.ClientURL = "http://127.0.0.1:0" },
		func(c *MemberConfig) { c.ClientURL = "https://127.0.0.1:2379" },
		func(c *MemberConfig) { c.InitialCluster = "x=" + URL(2) + ",y=http://192.168.0.1:2380" },
		func(c *MemberConfig) { c.ClusterState = "bogus" },
	} {
		cfg := base
		mod(&cfg)
		if _, err := cfg.embedConfig(); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := FreePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("bad or duplicate port %d in %v", p, ports)
		}
		seen[p] = true
	}
}
