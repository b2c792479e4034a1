// Package registry registers gRPC server instances in etcd and keeps them
// there for as long as the process lives.
//
// A Registrar holds one etcd lease, shared by all the instances it
// registers, and keeps it alive. Each instance is a key
//
//	<prefix>/<service>/<id>      e.g. /services/user/10.0.0.5:8080
//
// whose value is a JSON object that etcd's own naming packages read:
//
//	{"Addr":"10.0.0.5:8080","Metadata":{"version":"v1.4.2","region":"eu",
//	 "zone":"eu-1a","weight":100,"status":"serving","labels":{"shard":"3"}}}
//
// # A registration that never silently disappears
//
// Whatever ends the lease — etcd unreachable for longer than the TTL, etcd
// restarted with its data wiped, the lease revoked by an operator, the
// keepalive stream closed — the Registrar grants a new lease and puts every
// instance back, retrying with jittered backoff for as long as it lives. It
// also watches its own keys and puts back one that someone deletes, or
// overwrites with another value under the registrar's own lease (repairs
// of a key overwritten again and again are paced by the backoff). Every
// step is reported as an Event (WithEventHandler) and logged
// (WithLogger). Registrations made while etcd is away are kept and written
// when it answers.
//
// # One instance never holds up the others
//
// An instance's value (its JSON) may take at most MaxValueBytes (64 KiB,
// under etcd's default 1.5 MiB request limit); Register and Update refuse
// a larger one with ErrValueTooLarge. Writes go to etcd in transactions
// bounded by count and by bytes. A write etcd refuses for one key (its role
// may not write that service, say) fails that instance alone: it is
// reported as an EventRetrying naming the key and retried with backoff,
// while every other Register, Update and Deregister goes through.
//
// # A slow etcd
//
// Each etcd request is bounded by the request timeout (WithRequestTimeout)
// at first; while etcd does not answer in time the timeout doubles, up to
// 16 times the option, and it never falls under three times the slowest
// recent round trip. A Register that gives up first returns a
// *PendingError whose LastErr names the step that failed (grant, put,
// delete) and why.
//
// Close deletes the keys and revokes the lease within a bounded time;
// Orphan leaves them to expire, as a crashed process would.
//
// # Usage
//
//	cli, _ := etcdclient.New(etcdclient.Config{Endpoints: []string{"http://127.0.0.1:2379"}})
//	defer cli.Close()
//	r, _ := registry.New(cli, registry.WithTTL(10*time.Second))
//	defer r.Close()
//	_, err := r.Register(ctx, registry.Instance{
//		Service:  "user",
//		Addr:     "10.0.0.5:8080",
//		Metadata: registry.Metadata{Version: "v1.4.2", Zone: "eu-1a"},
//	})
//	...
//	r.Drain(ctx, "user", "10.0.0.5:8080") // before shutting down
//
// With etcd's own resolver (go.etcd.io/etcd/client/v3/naming/resolver),
// note that it strips one leading '/' from the target: the instances under
// "/services/user" are dialled as "etcd:////services/user".
package registry
