package lbtest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakWait is how long VerifyTestMain lets goroutines that are ending
// finish before it reports them.
const leakWait = 30 * time.Second

// VerifyTestMain runs the tests and, if they passed, fails the run when a
// goroutine is left over, as goleak.VerifyTestMain does, ignoring none.
// It gives goroutines that are ending up to 30 s, where goleak gives them
// about half a second: embedded etcd stops its gRPC server without
// waiting for the handlers (etcd's watch streams end after Close has
// returned), and on a loaded machine they take longer than that. A
// goroutine still there after 30 s is reported.
func VerifyTestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(leakWait)
		err := goleak.Find()
		for err != nil && time.Now().Before(deadline) {
			<-time.After(200 * time.Millisecond)
			err = goleak.Find()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left %v after the tests: %v\n", leakWait, err)
			code = 1
		}
	}
	os.Exit(code)
}
