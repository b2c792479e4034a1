package security

import (
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/internal/quote"
)

// UnknownMethodHandler returns a handler for grpc.UnknownServiceHandler
// that answers UNIMPLEMENTED, as grpc does, to calls of a service or
// method the server does not have; services lists the server's own
// (grpc.Server's GetServiceInfo).
//
// grpc runs no interceptor for such a call and answers it to anyone, so a
// caller that may call nothing could still learn which methods exist by
// trying names. A call that reaches this handler has passed the server's
// stream interceptors first: with StreamServerInterceptor among them, a
// caller not authorised for a method gets PERMISSION_DENIED whether the
// method exists or not, and only an authorised one learns that it does
// not.
//
//	srv = grpc.NewServer(grpc.Creds(creds),
//		grpc.ChainUnaryInterceptor(security.UnaryServerInterceptor(allow)),
//		grpc.ChainStreamInterceptor(security.StreamServerInterceptor(allow)),
//		grpc.UnknownServiceHandler(security.UnknownMethodHandler(func() map[string]grpc.ServiceInfo {
//			return srv.GetServiceInfo()
//		})))
func UnknownMethodHandler(services func() map[string]grpc.ServiceInfo) grpc.StreamHandler {
	return func(_ any, ss grpc.ServerStream) error {
		full, _ := grpc.MethodFromServerStream(ss)
		svc, method, _ := strings.Cut(strings.TrimPrefix(full, "/"), "/")
		if _, ok := services()[svc]; ok {
			return status.Errorf(codes.Unimplemented, "security: unknown method %s of service %s", quote.Bounded(method), quote.Bounded(svc))
		}
		return status.Errorf(codes.Unimplemented, "security: unknown service %s", quote.Bounded(svc))
	}
}
