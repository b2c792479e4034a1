package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemoRunsToCompletion runs the demo at a fast pace, in plaintext and
// with --tls: every event happens, and the graceful ones (join, drain,
// etcd leader loss) fail no call.
func TestDemoRunsToCompletion(t *testing.T) {
	for _, tls := range []bool{false, true} {
		t.Run(map[bool]string{false: "plaintext", true: "mTLS"}[tls], func(t *testing.T) { demoRun(t, tls) })
	}
}

func demoRun(t *testing.T, tls bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := newSyncBuffer()
	res, err := runDemo(ctx, demoOptions{pace: time.Second, tls: tls}, out)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	if len(res.events) != 4 {
		t.Fatalf("%d events ran, want 4\n%s", len(res.events), out)
	}
	for _, e := range res.events {
		graceful := !strings.Contains(e.what, "killed")
		if graceful && e.failed != 0 {
			t.Errorf("%s: %d calls failed", e.what, e.failed)
		}
	}
	if res.calls < 100 {
		t.Errorf("only %d calls made", res.calls)
	}
	wants := []string{"Totals:", "a 4th instance joins", "drains and leaves gracefully", "killed without warning", "leader crashes"}
	if tls {
		wants = append(wants, "mutual TLS on")
	}
	for _, want := range wants {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	t.Log(out.String()[strings.Index(out.String(), "Totals:"):])
}
