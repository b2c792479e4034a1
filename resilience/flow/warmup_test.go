package flow

import (
	"context"
	"math"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// The rate ramps from a third of QPS to QPS over the warm-up, and a rule
// idle for as long starts cold again.
func TestWarmUpRamp(t *testing.T) {
	t0 := time.Unix(1000, 0)
	now := t0
	l := &Limiter{now: func() time.Time { return now }}
	if err := l.Update(Rule{Method: "/a.B/C", QPS: 300, WarmUp: 10 * time.Second, MaxWait: time.Hour}); err != nil {
		t.Fatal(err)
	}
	lim := l.rules.Load().match("/a.B/C")
	at := func(d time.Duration, want rate.Limit) {
		t.Helper()
		now = t0.Add(d)
		done, err := l.Admit(context.Background(), "/a.B/C")
		if err != nil {
			t.Fatalf("at %v: %v", d, err)
		}
		done()
		if got := lim.bucket.Limit(); math.Abs(float64(got-want)) > 0.5 {
			t.Errorf("at %v: rate %v, want %v", d, got, want)
		}
	}
	at(0, 100)
	at(5*time.Second, 200)
	at(9*time.Second, 280)
	at(10*time.Second, 300)
	at(19*time.Second, 300)
	at(30*time.Second, 100) // idle 11 s > warm-up: cold again
}
