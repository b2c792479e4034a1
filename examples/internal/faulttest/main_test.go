package faulttest

import (
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
	"testing"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
