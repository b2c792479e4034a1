package leastrequest_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/internal/testserver"
	"github.com/lodestar-rpc/lodestar/lb/leastrequest"
	"github.com/lodestar-rpc/lodestar/registry"
)

// TestMain checks for goroutines left over, giving those that are ending
// time to end (lbtest.VerifyTestMain).
func TestMain(m *testing.M) { lbtest.VerifyTestMain(m) }

func TestParseConfig(t *testing.T) {
	p := balancer.Get(leastrequest.Name).(balancer.ConfigParser)
	for _, ok := range []string{``, `{}`, `{"choices":3}`} {
		if _, err := p.ParseConfig([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for js, want := range map[string]string{
		`{"choices":1}`:  "choices 1: want 2 to 10",
		`{"choices":11}`: "choices 11",
		`{"choise":2}`:   "unknown field",
		`[]`:             "cannot unmarshal",
	} {
		if _, err := p.ParseConfig([]byte(js)); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), leastrequest.Name) {
			t.Errorf("%s: error %v, want one naming %s and %q", js, err, leastrequest.Name, want)
		}
	}
}

// An instance that holds its calls (the slowest an instance can be) has
// more in flight than the others as soon as a few callers wait on it, so
// it gets no new calls while they make progress: with 16 callers it can
// hold at most 8 of them (the others then have fewer in flight), a few
// more if picks race, never all 16. Round robin sends it every third call
// until every caller waits on it. Nothing here depends on how fast the
// machine is: the held instance answers nothing until the end.
func TestSlowInstanceGetsFewerCalls(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	conn := r.Dial(leastrequest.Name, leastrequest.Config{})
	r.WaitAll(conn, 0, 1, 2)

	const (
		callers = 16
		served  = 800         // calls the other two answer before the test ends
		maxHeld = callers - 4 // callers the held instance may keep waiting
	)
	entered, release := r.Srv[0].HoldCalls()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // bounds a hang only
	var answered atomic.Int64
	enough := make(chan struct{})
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	defer func() {
		cancel() // ends the held calls and stops the callers
		release()
		wg.Wait()
	}()
	for range callers {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := testserver.Call(ctx, conn); err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				if answered.Add(1) == served {
					close(enough)
				}
			}
		})
	}
	held := 0
	for held <= maxHeld {
		select {
		case <-entered:
			held++
		case <-enough:
			t.Logf("the held instance keeps %d of %d callers waiting while the others answer %d calls", held, callers, served)
			return
		case err := <-errs:
			t.Fatalf("call: %v", err)
		case <-ctx.Done():
			t.Fatalf("the other instances answered %d of %d calls in 2 minutes; %d callers wait on the held instance", answered.Load(), served, held)
		}
	}
	t.Fatalf("the held instance got %d calls while %d callers could call (at most %d expected); %d answered by the others", held, callers, maxHeld, answered.Load())
}

// Weight 0 means no new calls, for this policy as for the others.
func TestWeightZeroGetsNoCalls(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Reg.SetWeight(ctx, lbtest.Service, r.Srv[0].Addr, 0); err != nil {
		t.Fatal(err)
	}
	conn := r.Dial(leastrequest.Name, nil)
	r.WaitAll(conn, 1)
	// The weight change may reach the picker after the first calls.
	deadline := time.Now().Add(30 * time.Second) // bounds a hang only
	for {
		c := r.Counts(ctx, conn, 200)
		if c[0] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("weight-0 instance still gets calls: %v", c)
		}
	}
}
