package flow

import (
	"context"
	"testing"
	"time"
)

// The seed's rule: 100 QPS on one method, offered 300 calls a second for
// 3 s on the limiter's own clock, admits 100 ± 5 in each second (the
// first one's burst included); the others are rejected at once.
func TestRateAdmits100PerSecond(t *testing.T) {
	t0 := time.Unix(1000, 0)
	now := t0
	l := &Limiter{now: func() time.Time { return now }}
	if err := l.Update(Rule{Method: "/a.B/C", QPS: 100}); err != nil {
		t.Fatal(err)
	}
	var admitted, rejected [3]int
	for sec := range 3 {
		for i := range 300 {
			now = t0.Add(time.Duration(sec)*time.Second + time.Duration(i)*time.Second/300)
			done, err := l.Admit(context.Background(), "/a.B/C")
			if err != nil {
				rejected[sec]++
				continue
			}
			admitted[sec]++
			done()
		}
	}
	for i, n := range admitted {
		if n < 95 || n > 105 {
			t.Errorf("second %d: %d admitted, %d rejected, want 100 ± 5 admitted", i, n, rejected[i])
		}
	}
}
