// Package discovery is a gRPC resolver that turns "lodestar:///<service>"
// into the live set of instances registered in etcd by package registry
// (or by etcd's own endpoints.Manager).
//
//	cli, _ := etcdclient.New(etcdclient.Config{Endpoints: endpoints})
//	b, _ := discovery.NewBuilder(cli)
//	conn, _ := grpc.NewClient("lodestar:///user",
//		grpc.WithResolvers(b),
//		grpc.WithTransportCredentials(insecure.NewCredentials()),
//		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
//
// # What it guarantees
//
// It reads the service's keys at one revision (a linearizable first page,
// the next pages at its revision, 5,000 keys each, so a large service
// is read in bounded requests and bounded memory), then watches from the
// next revision, so no change between the two is lost; it
// applies changes in revision order and pushes a list to grpc only when an
// instance really changed. Bursts are coalesced: changes committed together
// make one update, and changes that follow an update within
// WithUpdateInterval (20 ms) are held and pushed together when it ends,
// while a change after a quiet spell goes at once. Work per change is
// proportional to the change: the list is a map, and each update is the
// last sorted list with the changes merged in, one copy of it (grpc's
// resolver API takes the whole list each time), never a walk over every
// instance (except while every instance is draining). Addresses are pushed
// in sorted order.
//
// While etcd is unreachable the last list stays in force: the resolver
// never pushes an empty list because etcd is away. Only an instance whose
// key is deleted, or whose lease expires, leaves the list. A broken watch
// (leader lost, connection lost) is resumed; a watch cancelled for want of
// a leader is resumed as soon as the member answers a linearizable read
// again. History lost to compaction is re-read, and so is the list after
// every reconnection to etcd (10,000 instances: about 55 ms), checked
// against the last one: an etcd that came back without its data (restored
// from nothing, a new cluster, or restarted empty with its cluster id and
// written past the client's revision while the client was away) is
// detected by its cluster id, its revision, or a history that differs
// (a key unchanged since the last list at another revision, a key gone
// that it never had), and the instances it forgot are kept for a grace
// period (WithResetGrace) while their registrars put them back.
//
// A resolver keeps at most WithMaxInstances instances (default 100,000)
// and decodes values of at most WithMaxValueBytes (default 64 KiB); the
// rest are left out and reported (EventLimited, EventSkipped), never a
// crash. Errors and logs quote keys and values by a bounded prefix. Errors go to
// grpc's ReportError, where the last good list, if any, stays in force. A
// list grpc refuses (its balancer returned an error) is offered again
// after a backoff, as grpc asks of resolvers, and reported (EventRefused).
//
// Build returns at once even if etcd is down. With WithSnapshotDir, the
// last good list is saved to a file, and a client that starts while etcd
// is unreachable serves from it (logged as stale) until etcd answers.
//
// A value that does not parse is skipped with a logged reason (and an
// EventSkipped); the other instances are unaffected.
//
// # Metadata for balancers
//
// Each endpoint carries the instance it came from (Instance, Weight, Zone,
// Region, Version): version, region, zone, weight, status and labels, so
// balancers can route by them. Draining instances are not offered for new
// calls, unless every instance is draining, in which case all are offered
// rather than none. The list is grpc's endpoint list; balancers built on
// grpc's balancer/base, which read addresses only, need WithAddresses.
package discovery
