package etcdclient_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
)

// TestPasswordOverPlaintext: with etcd's auth on and served over http, a
// client with a password is refused before it dials, naming the user and
// the endpoint and never the password; with AllowInsecureAuth it
// authenticates (a wrong password then fails, so the password is what
// etcd checked).
func TestPasswordOverPlaintext(t *testing.T) {
	c := etcdtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := c.Client(t)
	if _, err := admin.RoleAdd(ctx, "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.UserAdd(ctx, "root", "s3cret-root"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	ep := c.Endpoints()[0]
	bare := strings.TrimPrefix(ep, "http://")
	for _, eps := range [][]string{{ep}, {bare}, {"unix:///tmp/lodestar-etcd.sock"}} {
		cli, err := etcdclient.New(etcdclient.Config{Endpoints: eps, Username: "root", Password: "s3cret-root"})
		if err == nil {
			cli.Close()
			t.Fatalf("a password over plain %v was accepted", eps)
		}
		msg := err.Error()
		want := `refusing to send the password for user "root" over plain ` + eps[0]
		if eps[0] == bare {
			want = `refusing to send the password for user "root" over plain http://` + bare
		}
		if !strings.Contains(msg, want) || !strings.Contains(msg, "AllowInsecureAuth") {
			t.Errorf("New over %v: %v, want an error containing %q and naming AllowInsecureAuth", eps, err, want)
		}
		if strings.Contains(msg, "s3cret") {
			t.Errorf("the error shows the password: %v", err)
		}
	}

	cfg := etcdclient.Config{Endpoints: c.Endpoints(), Username: "root", Password: "s3cret-root", AllowInsecureAuth: true, DialTimeout: 30 * time.Second}
	cli, err := etcdclient.New(cfg)
	if err != nil {
		t.Fatalf("with AllowInsecureAuth: %v", err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put as root with AllowInsecureAuth: %v", err)
	}
	cfg.Password = "wrong"
	if cli, err := etcdclient.New(cfg); err == nil {
		cli.Close()
		t.Fatal("a wrong password was accepted: the password never reached etcd")
	} else if !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("wrong password: %v", err)
	}
}

// TestConfigPrintsNoPassword: a Config printed with %v, %+v or %#v (as in
// a log line) does not show its password.
func TestConfigPrintsNoPassword(t *testing.T) {
	cfg := etcdclient.Config{Endpoints: []string{"https://etcd:2379"}, Username: "u", Password: "pw-s3cret"}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		s := fmt.Sprintf(verb, cfg)
		if strings.Contains(s, "pw-s3cret") || !strings.Contains(s, `Username:"u" Password:(set)`) {
			t.Errorf("%s: %s", verb, s)
		}
		if s := fmt.Sprintf(verb, &cfg); strings.Contains(s, "pw-s3cret") {
			t.Errorf("%s of a pointer: %s", verb, s)
		}
	}
}
