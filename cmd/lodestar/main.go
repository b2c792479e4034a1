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
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lodestar:", err)
		os.Exit(1)
	}
}

// run executes the command line args, reading passwords from stdin
// when asked (nil: no input), writing to stdout and stderr.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	root := newRootCmd(stdin, stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
