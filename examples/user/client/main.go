// Command client calls UserService through lodestar: it creates a user,
// then reads it back, and prints which instance answered each call.
//
//	go run ./examples/user/client --etcd http://127.0.0.1:2379 --calls 10
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/proto/userpb"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(out)
	etcd := fs.String("etcd", "http://127.0.0.1:2379", "etcd endpoints, comma-separated")
	calls := fs.Int("calls", 6, "GetUser calls to make")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := lodestar.Dial(dctx, "user", lodestar.WithEtcdEndpoints(strings.Split(*etcd, ",")...), lodestar.WithWaitForReady())
	if err != nil {
		return err
	}
	defer conn.Close()
	c := userpb.NewUserServiceClient(conn)
	created, err := c.CreateUser(dctx, &userpb.CreateUserRequest{Name: "Ada", Email: "ada@example.com"})
	if err != nil {
		return fmt.Errorf("CreateUser: %w", err)
	}
	fmt.Fprintf(out, "CreateUser → %s (served by %s)\n", created.Data.UserId, created.Message)
	for range *calls {
		r, err := c.GetUser(dctx, &userpb.UserRequest{UserId: created.Data.UserId})
		if err != nil {
			return fmt.Errorf("GetUser: %w", err)
		}
		if r.Success {
			fmt.Fprintf(out, "GetUser %s → %s <%s> (served by %s)\n", created.Data.UserId, r.Data.Name, r.Data.Email, r.Message)
		} else {
			fmt.Fprintf(out, "GetUser %s → %s\n", created.Data.UserId, r.Message)
		}
	}
	return nil
}
