// Package recovery turns a panic in a gRPC handler into an INTERNAL error
// for that call, with the stack logged, instead of a crashed process.
//
//	grpc.NewServer(
//		grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(logger)),
//		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(logger)))
//
// lodestar.NewServer installs both. A panic in a goroutine the handler
// starts is not on the handler's stack and cannot be recovered here: such
// goroutines need their own recover.
package recovery

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// seq numbers panics, so that the error a client sees can be found in the
// server's log.
var seq atomic.Uint64

// UnaryServerInterceptor recovers panics of unary handlers. A nil logger
// logs to slog.Default().
func UnaryServerInterceptor(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if v := recover(); v != nil {
				resp, err = nil, recovered(ctx, logger, info.FullMethod, v)
			}
		}()
		return handler(ctx, req)
	}
}

// StreamServerInterceptor recovers panics of streaming handlers. A nil
// logger logs to slog.Default().
func StreamServerInterceptor(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if v := recover(); v != nil {
				err = recovered(ss.Context(), logger, info.FullMethod, v)
			}
		}()
		return handler(srv, ss)
	}
}

func recovered(ctx context.Context, logger *slog.Logger, method string, v any) error {
	if logger == nil {
		logger = slog.Default()
	}
	n := seq.Add(1)
	logger.ErrorContext(ctx, "panic in handler", "method", method, "panic", fmt.Sprint(v), "panic_id", n, "stack", string(debug.Stack()))
	// The panic value stays in the log: it may hold what the client must
	// not see.
	return status.Errorf(codes.Internal, "%s: internal error (panic %d, logged by the server)", method, n)
}
