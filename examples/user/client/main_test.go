package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/internal/exampletest"
	"github.com/lodestar-rpc/lodestar/examples/proto/userpb"
	"github.com/lodestar-rpc/lodestar/examples/user/usersvc"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

func TestClientCallsTheService(t *testing.T) {
	c := etcdtest.New(t)
	exampletest.Serve(t, c.Endpoints(), "user", func(s *lodestar.Server) { userpb.RegisterUserServiceServer(s, usersvc.New("t")) })
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--etcd", strings.Join(c.Endpoints(), ",")}, &out); err != nil {
		t.Fatalf("client: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "CreateUser →") {
		t.Errorf("client output:\n%s", out.String())
	}
	t.Log(out.String())
}
