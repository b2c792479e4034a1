// Package lodestar lets gRPC services register themselves in etcd and find,
// balance over and survive each other.
//
// The short path: a server in three lines, a client in one.
//
//	s, _ := lodestar.NewServer("user", lodestar.WithEtcdEndpoints("http://127.0.0.1:2379"))
//	userpb.RegisterUserServiceServer(s, &users{})
//	s.ServeUntilSignal() // listens, registers, serves health; drains and deregisters on SIGTERM
//
//	conn, _ := lodestar.Dial(ctx, "user", lodestar.WithEtcdEndpoints("http://127.0.0.1:2379"))
//	defer conn.Close()
//	user, err := userpb.NewUserServiceClient(conn).GetUser(ctx, req)
//
// Dial balances over every instance, checks their health, and retries
// idempotent methods (idempotency_level in the proto, or WithIdempotent)
// on another instance when one dies mid-call.
//
// The pieces, from server to client:
//
//   - registry: a server process registers its instances under one etcd
//     lease (key <prefix>/<service>/<id>, value readable by etcd's own
//     naming packages), keeps the lease alive, and puts everything back
//     after any lease loss: an etcd outage longer than the TTL, a restart
//     with wiped data, a revoke.
//   - etcdclient: an etcd client set to reconnect within about a second
//     after an outage, which is what makes quick re-registration possible.
//   - discovery: a gRPC resolver for lodestar:///<service> that lists at a
//     revision, watches from the next, re-lists on compaction, keeps the
//     last known list while etcd is away (and across an etcd that lost its
//     data), and attaches each instance's metadata to its endpoint.
//   - lb: balancers that read that metadata, one per package: weighted
//     round robin, least request, latency-aware, consistent hash by a
//     request key, locality (zone, region, anywhere) and canary by
//     version. The subset policies nest any other as their child; select
//     them with WithBalancer or WithBalancerConfig.
//   - resilience: retries with a budget on another instance, hedging,
//     breakers with fallbacks, default deadlines; flow rules, adaptive
//     shedding, panic recovery on servers.
//   - security, etcdauth: TLS and mutual TLS from rotated files,
//     authorization by certificate identity; etcd roles per service.
//   - rules, metrics, console (planned).
//
// The command cmd/lodestar runs an embedded etcd for development
// ("lodestar dev"), single etcd members for a hand-made cluster
// ("lodestar etcd") and lists what is registered ("lodestar list").
package lodestar
