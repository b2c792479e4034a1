// Command lodestar runs an embedded etcd for development, registers demo
// instances, and inspects what is registered.
//
//	lodestar dev                 embedded etcd + three registered instances
//	lodestar etcd --name n1 ...  one embedded etcd member (for a hand-made cluster)
//	lodestar list [service]      what is registered, read from etcd
//
// Every subcommand has --help, exits non-zero with a one-line reason on
// error, and finds etcd through --endpoints or LODESTAR_ENDPOINTS.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lodestar:", err)
		os.Exit(1)
	}
}

// run executes the command line args, writing to stdout and stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
