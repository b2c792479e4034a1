// Package leakcheck fails a test binary that leaves goroutines behind, as
// goleak.VerifyTestMain does, but gives goroutines that are already ending
// time to end.
//
// Embedded etcd stops its gRPC server without waiting for the handlers: a
// watch stream or a password check (bcrypt) can still be running when
// Close returns, and on a loaded machine it takes longer to end than the
// half second goleak waits. A goroutine still there after Wait is a leak.
package leakcheck

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Wait is how long VerifyTestMain lets goroutines that are ending finish
// before it reports them.
const Wait = 30 * time.Second

// VerifyTestMain runs the tests and, if they passed, fails the run when a
// goroutine other than those opts ignore is still there after Wait.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(Wait)
		err := goleak.Find(opts...)
		for err != nil && time.Now().Before(deadline) {
			<-time.After(200 * time.Millisecond)
			err = goleak.Find(opts...)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left %v after the tests: %v\n", Wait, err)
			code = 1
		}
	}
	os.Exit(code)
}
