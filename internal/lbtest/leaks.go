package lbtest

import (
	"testing"

	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
)

// VerifyTestMain is leakcheck.VerifyTestMain: embedded etcd's watch
// streams end after its Close has returned.
func VerifyTestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
