package pick

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/lb"
)

// Ejection time grows with each ejection up to the maximum, and resets
// once an instance has behaved for the maximum; consecutive failures
// reset on success.
func TestEjectionGrowsCapsAndResets(t *testing.T) {
	cfg, err := lb.OutlierEjection{ConsecutiveFailures: 2, BaseEjectionTime: lb.Duration(time.Second), MaxEjectionTime: lb.Duration(3 * time.Second), MaxEjectionPercent: 100}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	now := int64(0)
	e := &ejector{cfg: cfg, now: func() int64 { return now }}
	h := &health{}
	e.setAll([]*health{h, {}})
	fail := status.Error(codes.Unavailable, "x")
	eject := func() time.Duration {
		t.Helper()
		e.done(h, fail)
		e.done(h, fail)
		until := h.until.Load()
		if until <= now {
			t.Fatalf("not ejected after 2 failures")
		}
		d := time.Duration(until - now)
		now = until // its time is up
		return d
	}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second} {
		if got := eject(); got != want {
			t.Errorf("ejection %d: %v, want %v", i+1, got, want)
		}
	}
	// A success between failures resets the count: no ejection.
	e.done(h, fail)
	e.done(h, nil)
	e.done(h, fail)
	if h.until.Load() > now {
		t.Error("ejected after failures that were not consecutive")
	}
	// Good for longer than the maximum: back to the base time.
	now += int64(4 * time.Second)
	if got := eject(); got != time.Second {
		t.Errorf("after good behaviour: %v, want the base 1s", got)
	}
}
