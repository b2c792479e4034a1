package etcdclient_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"

	"github.com/lodestar-rpc/lodestar/etcdclient"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
)

// TestKeepaliveSlowLinkAndDeadLink: with the default keepalive, a watch
// over a link that takes 1.6 s each way (a 3.2 s round trip) keeps its
// connection through two ping intervals and still gets events; the same
// link cut (data held, nothing answered) is closed, so that the client
// can move on.
func TestKeepaliveSlowLinkAndDeadLink(t *testing.T) {
	c := etcdtest.New(t)
	p := etcdtest.NewProxy(t, c.Endpoints()[0])
	p.SetDelay(1600 * time.Millisecond)
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: []string{p.Endpoint()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := cli.Watch(wctx, "k", clientv3.WithCreatedNotify())
	select {
	case wr := <-wch:
		if !wr.Created {
			t.Fatalf("first watch response: %+v", wr)
		}
	case <-ctx.Done():
		t.Fatal("the watch was never created")
	}
	conn := cli.ActiveConnection()
	if s := conn.GetState(); s != connectivity.Ready {
		t.Fatalf("connection %s after the watch was created", s)
	}

	// Two ping intervals of silence: each ping is answered 3.2 s later.
	window := 2*etcdclient.DefaultKeepAliveTime + 5*time.Second
	wait, stop := context.WithTimeout(ctx, window)
	changed := conn.WaitForStateChange(wait, connectivity.Ready)
	stop()
	if changed {
		t.Fatalf("the slow link's connection was dropped (now %s) within two keepalive intervals", conn.GetState())
	}
	if _, err := c.Client(t).Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	select {
	case wr := <-wch:
		if err := wr.Err(); err != nil || len(wr.Events) != 1 {
			t.Fatalf("watch over the slow link: %+v, %v", wr, err)
		}
	case <-ctx.Done():
		t.Fatal("no event over the slow link")
	}

	// The link goes dead: the keepalive closes the connection. The
	// deadline only bounds a hang; the default gives up after
	// KeepAliveTime + KeepAliveTimeout of silence.
	p.Pause()
	defer p.Resume()
	if !conn.WaitForStateChange(ctx, connectivity.Ready) {
		t.Fatal("a dead link's connection was never closed")
	}
}
