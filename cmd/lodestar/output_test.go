package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
)

// hostile are keys and values written straight to etcd to take over a
// terminal: a title change, a screen clear, colours, a right-to-left
// override that reorders what follows, and a tab that breaks a table.
var hostile = map[string]string{
	"/services/user/\x1b]0;pwned\x07id": `{"Addr":"\u001b[2J127.0.0.1:7001","Metadata":{"version":"\u001b[31mred","zone":"z\u202eevil","region":"a\tb"}}`,
	"/services/user/bad\x1b[1m":         "{\x1b[5m not json",
	"/services/\x1b[8m":                 "{}",
}

// clean fails if s holds a raw control character or a bidirectional
// override.
func clean(t *testing.T, what, s string) {
	t.Helper()
	for _, r := range s {
		if (r < 0x20 && r != '\n') || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u202e' {
			t.Fatalf("%s prints %U raw:\n%q", what, r, s)
		}
	}
}

func putHostile(t *testing.T, ctx context.Context, c *etcdtest.Cluster) {
	t.Helper()
	cli := c.Client(t)
	for k, v := range hostile {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
}

// TestListEscapesWhatEtcdHolds: list prints keys, addresses, metadata
// and decoding errors with control characters escaped, still showing
// them (\x1b), and one line per key.
func TestListEscapesWhatEtcdHolds(t *testing.T) {
	c := etcdtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	putHostile(t, ctx, c)
	out := newSyncBuffer()
	if err := run(ctx, []string{"list", "--endpoints", strings.Join(c.Endpoints(), ",")}, nil, out, out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	clean(t, "list", s)
	for _, want := range []string{`"\x1b]0;pwned\aid"`, `"\x1b[2J127.0.0.1:7001"`, `"\x1b[31mred"`, `"z\u202eevil"`, `"a\tb"`, `"bad\x1b[1m"`, `"/services/\x1b[8m"`} {
		if !strings.Contains(s, want) {
			t.Errorf("list lacks %s:\n%s", want, s)
		}
	}
	if n := strings.Count(s, "\n"); n != 1+len(hostile) {
		t.Errorf("%d lines, want a header and one per key:\n%s", n, s)
	}
}

// TestDevLogEscapesChanges: the change log of lodestar dev prints what
// etcd sends with control characters escaped.
func TestDevLogEscapesChanges(t *testing.T) {
	c := etcdtest.New(t)
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := newSyncBuffer()
	say := logTo(out)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- watchChanges(wctx, cli, "/services", say) }()
	// The watch starts after a first read: a marker written until one
	// is seen says it is on.
	for i := 0; !strings.Contains(out.String(), "/services/marker"); i++ {
		if _, err := cli.Put(ctx, "/services/marker", "{}"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-out.wrote:
		case <-time.After(time.Second):
		case <-ctx.Done():
			t.Fatal("the watch printed nothing")
		}
	}
	putHostile(t, ctx, c)
	if _, err := cli.Delete(ctx, "/services/user/bad\x1b[1m"); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, `DELETE "/services/user/bad\x1b[1m"`, 30*time.Second)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s := out.String()
	clean(t, "dev's change log", s)
	for _, want := range []string{`PUT "/services/user/\x1b]0;pwned\aid" addr="\x1b[2J127.0.0.1:7001"`, `zone="z\u202eevil"`, `PUT "/services/user/bad\x1b[1m" (unreadable: `} {
		if !strings.Contains(s, want) {
			t.Errorf("change log lacks %s:\n%s", want, s)
		}
	}
}
