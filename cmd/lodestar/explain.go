package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/etcdclient"
)

// probeTimeout bounds the look at why etcd did not answer.
const probeTimeout = 3 * time.Second

// explain adds why to an error from etcd that says only that it did not
// answer in time (clientv3 reports a bare "context deadline exceeded"
// whatever the cause): it probes the endpoints and appends what each
// said, e.g. "connection refused", or a TLS error. ctx is the command's,
// not the request's that ran out.
func (g *globals) explain(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	if !errors.Is(err, context.DeadlineExceeded) && status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if perr := etcdclient.Probe(pctx, g.probe); perr != nil {
		return fmt.Errorf("%w (%v)", err, perr)
	}
	return fmt.Errorf("%w (etcd accepts connections but did not answer in time: no leader, overloaded, or a slow link)", err)
}
