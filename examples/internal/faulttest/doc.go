// Package faulttest holds a process-level fault test of lodestar: real OS
// processes built from this module (a `lodestar etcd` member and three
// example UserService servers) under a steady load of idempotent and
// non-idempotent calls from a lodestar client, while one server is killed
// with SIGKILL, one is stopped with SIGTERM and started again, and the
// etcd member is killed and restarted with its data.
//
// The package has no code outside its tests. Run it with
//
//	go test -race -count=1 -v ./examples/internal/faulttest/
//
// The test builds the binaries, skips under -short, and logs the failed
// calls of each kind, the non-idempotent calls that were in flight on the
// killed server, and the time each registration took to come back.
package faulttest
