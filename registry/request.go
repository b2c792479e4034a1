package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Every etcd request of the run loop is bounded by a timeout that adapts
// to the round trip etcd actually has: the request timeout (the option)
// doubled for each consecutive request that timed out, up to
// maxTimeoutFactor times it, and never under rttFactor times the slowest
// recent round trip. A slow link therefore costs a few timed-out attempts,
// not every attempt.
const (
	maxTimeoutFactor = 16
	rttFactor        = 3
)

// timeout returns the bound for the next etcd request of the run loop.
func (r *Registrar) timeout(st *loopState) time.Duration {
	base := r.opts.requestTimeout
	limit := base * maxTimeoutFactor
	d := base
	for i := 0; i < st.slow && d < limit; i++ {
		d *= 2
	}
	d = max(d, rttFactor*st.rtt)
	return min(d, limit)
}

// request runs one etcd request of the run loop under the adaptive
// timeout. The error names the step (what) and, when etcd did not answer
// in time, the timeout that ran out. A request that succeeds feeds the
// round-trip estimate.
func (r *Registrar) request(st *loopState, what string, f func(context.Context) error) error {
	d := r.timeout(st)
	ctx, cancel := context.WithTimeout(r.ctx, d)
	defer cancel()
	start := time.Now()
	err := f(ctx)
	took := time.Since(start)
	switch {
	case err == nil:
		// The slowest recent round trip, decaying by a quarter per answer.
		st.rtt = max(took, st.rtt-st.rtt/4)
		st.slow = 0
		return nil
	case r.ctx.Err() == nil && (ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded)):
		st.slow++
		return fmt.Errorf("%s: no answer from etcd within %s: %w", what, d.Round(time.Millisecond), err)
	case refused(err):
		st.slow = 0 // etcd answered
	}
	return fmt.Errorf("%s: %w", what, err)
}

// refused reports whether etcd answered err for this request alone, its
// content or its key (permission denied, request too large, too many
// operations in a transaction), as opposed to not answering at all or a state of the
// whole registrar (an unreachable etcd, a lost lease, a bad token). A
// request that is refused fails the same way when sent again as it is,
// but another request may pass.
func refused(err error) bool {
	switch code(err) {
	case codes.PermissionDenied, codes.InvalidArgument:
		// Not ResourceExhausted (too many requests, no space left) nor
		// FailedPrecondition (not leader, ...): those are etcd's state,
		// not this request's, and pass with time.
		return true
	}
	return false
}

// code returns the grpc code of an error from clientv3, which turns the
// status errors it knows into rpctypes.EtcdError.
func code(err error) codes.Code {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code()
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return codes.Unknown
}
