package retry_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/lb/hash"
	"github.com/lodestar-rpc/lodestar/lb/roundrobin"
	"github.com/lodestar-rpc/lodestar/registry"
	"github.com/lodestar-rpc/lodestar/resilience/retry"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

const check = "/grpc.health.v1.Health/Check"

func idempotent(m string) bool { return m == check }

// noEjection keeps failing instances in the balancer, so that what the
// tests see is the retries' doing.
var noEjection = struct {
	Eject lb.OutlierEjection `json:"outlierEjection"`
}{lb.OutlierEjection{Disabled: true}}

// dial connects through the rig with the retrier and no retry policy of
// grpc's own.
func dial(t *testing.T, r *lbtest.Rig, rt *retry.Retrier, policy string, config any) *grpc.ClientConn {
	t.Helper()
	return r.DialPlain(policy, config, grpc.WithChainUnaryInterceptor(rt.UnaryClientInterceptor()))
}

func TestConfigValidated(t *testing.T) {
	for _, c := range []struct {
		cfg  retry.Config
		want string
	}{
		{retry.Config{MaxAttempts: 6}, "maxAttempts 6: want 1 to 5"},
		{retry.Config{InitialBackoff: time.Second, MaxBackoff: time.Millisecond}, "backoff 1s to 1ms"},
		{retry.Config{BudgetRatio: 2}, "budgetRatio 2"},
		{retry.Config{Codes: []codes.Code{codes.OK}}, "OK is not an error"},
		{retry.Config{Hedge: map[string]retry.Hedge{check: {Delay: time.Second}}}, "hedge " + check + ": the method is not declared idempotent"},
		{retry.Config{Idempotent: idempotent, Hedge: map[string]retry.Hedge{check: {}}}, "set either delay"},
		{retry.Config{Idempotent: idempotent, Hedge: map[string]retry.Hedge{check: {Quantile: 1.5, Delay: 0}}}, "quantile 1.5"},
	} {
		if _, err := retry.New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.cfg, err, c.want)
		}
	}
}

// One of three instances answers UNAVAILABLE to everything: with the
// defaults (retries and ejection), idempotent calls all succeed; a
// non-idempotent method's handler runs once per call.
func TestIdempotentRetriedOthersNot(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	rt, err := retry.New(retry.Config{Idempotent: idempotent})
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, r, rt, roundrobin.Name, nil)
	r.WaitAll(conn, 0, 1, 2)
	r.Srv[0].FailWith(codes.Unavailable)
	ctx := context.Background()
	for i := range 600 {
		if _, err := r.Call(ctx, conn); err != nil {
			t.Fatalf("idempotent call %d failed: %v", i, err)
		}
	}
	calls, retries, _ := rt.Stats()
	t.Logf("600 idempotent calls, 0 failed; retries %d (calls seen %d)", retries, calls)
	if retries == 0 {
		t.Error("no retries: the failing instance got no calls?")
	}

	// The same servers under a method not declared idempotent.
	rt2, err := retry.New(retry.Config{Idempotent: func(string) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	conn2 := dial(t, r, rt2, roundrobin.Name, noEjection)
	deadline := time.Now().Add(15 * time.Second)
	for seen := map[int]bool{}; !seen[1] || !seen[2]; { // connected to the healthy ones
		if time.Now().After(deadline) {
			t.Fatal("healthy servers never answered")
		}
		if i, err := r.Call(ctx, conn2); err == nil {
			seen[i] = true
		}
	}
	before := int64(0)
	for _, s := range r.Srv {
		before += s.Calls()
	}
	failed := 0
	for range 300 {
		if _, err := r.Call(ctx, conn2); status.Code(err) == codes.Unavailable {
			failed++
		}
	}
	after := int64(0)
	for _, s := range r.Srv {
		after += s.Calls()
	}
	if after-before != 300 {
		t.Errorf("300 non-idempotent calls ran %d handlers, want 300 (no retries)", after-before)
	}
	if failed < 50 {
		t.Errorf("only %d of 300 non-idempotent calls failed; without ejection the failing instance gets a third", failed)
	}
}

// With every instance failing, the attempts the servers see stay within
// the budget: 20% of calls over the reserve of 10.
func TestBudgetBoundsAttempts(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	rt, err := retry.New(retry.Config{Idempotent: idempotent, MaxAttempts: 5, InitialBackoff: time.Microsecond, MaxBackoff: time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, r, rt, roundrobin.Name, noEjection)
	r.WaitAll(conn, 0, 1, 2)
	base := int64(0)
	for _, s := range r.Srv {
		base += s.Calls()
		s.FailWith(codes.Unavailable)
	}
	const calls = 500
	for range calls {
		r.Call(context.Background(), conn)
	}
	attempts := int64(0)
	for _, s := range r.Srv {
		attempts += s.Calls()
	}
	attempts -= base
	// The budget counts every call the retrier saw, the warm-up's too.
	seen, _, _ := rt.Stats()
	allowed := calls + seen/5 + 10
	t.Logf("%d calls, every instance failing: %d attempts reached servers (budget allows %d)", calls, attempts, allowed)
	if attempts > allowed {
		t.Errorf("%d attempts, over the budget of %d", attempts, allowed)
	}
	if attempts <= calls {
		t.Errorf("no retries at all")
	}
}

// A retry goes to another instance: a key whose owner fails is still
// served, which the hash policy alone would never do.
func TestRetryGoesElsewhere(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{})
	// Half the keys need a retry: a budget for all of them.
	rt, err := retry.New(retry.Config{Idempotent: idempotent, MaxAttempts: 2, BudgetRatio: 1})
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, r, rt, hash.Name, struct {
		lb.OutlierEjection `json:"outlierEjection"`
	}{lb.OutlierEjection{Disabled: true}})
	r.WaitAll(conn, 0, 1)
	r.Srv[0].FailWith(codes.Unavailable)
	ctx := context.Background()
	for k := range 200 {
		kctx := hash.WithKey(ctx, fmt.Sprintf("user-%d", k))
		i, err := r.Call(kctx, conn)
		if err != nil {
			t.Fatalf("key user-%d: %v", k, err)
		}
		if i != 1 {
			t.Fatalf("key user-%d answered by %d", k, i)
		}
	}
	_, retries, _ := rt.Stats()
	owned := int(retries)
	t.Logf("200 keys, %d owned by the failing instance, all served by the other on retry", owned)
	if owned == 0 {
		t.Error("no key was owned by the failing instance")
	}
}

// No retry waits past the caller's deadline: when the backoff would
// outlast it, the call ends at once with the last error.
func TestRetryWithinDeadline(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{})
	rt, err := retry.New(retry.Config{Idempotent: idempotent, InitialBackoff: 10 * time.Second, MaxBackoff: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, r, rt, roundrobin.Name, noEjection)
	r.WaitAll(conn, 0)
	r.Srv[0].FailWith(codes.Unavailable)
	// The first retry goes at once (to the only instance: it is avoided,
	// but there is no other); the second would wait up to 10 s, and the
	// deadline is 5 s away: the call ends at once.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		start := time.Now()
		_, err := r.Call(ctx, conn)
		took := time.Since(start)
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("call: %v", err)
		}
		// A backoff drawn under the time left is waited; one over it ends
		// the call at once. Try until one ends at once (a draw over 5 s
		// of 10 s: half of them).
		if took < time.Second {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("every call waited out its deadline")
		}
	}
}

// stall is how long a stalled call waits: far longer than callDeadline, so
// a call that waited for a stall fails, where one whose hedge answered
// succeeds, however slow the machine.
const (
	stall        = time.Minute
	callDeadline = 20 * time.Second
)

// hedgedCalls makes n calls, each within callDeadline, failing the test
// on any error, and logs their p50 and p99.
func hedgedCalls(t *testing.T, r *lbtest.Rig, conn *grpc.ClientConn, n int) (p50, p99 time.Duration) {
	t.Helper()
	lat := make([]time.Duration, 0, n)
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
		start := time.Now()
		_, err := r.Call(ctx, conn)
		cancel()
		if err != nil {
			t.Fatalf("call %d: %v (a call waited for the stalled instance)", len(lat), err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100]
}

// With one of three instances stalling for a minute on one call in five,
// hedged calls do not wait for it: every call succeeds long before.
func TestHedgingCutsTheStall(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	rt, err := retry.New(retry.Config{Idempotent: idempotent, Hedge: map[string]retry.Hedge{check: {Delay: 30 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, r, rt, roundrobin.Name, nil)
	r.WaitAll(conn, 0, 1, 2)
	r.Srv[0].StallSome(stall, 1, 5)
	p50, p99 := hedgedCalls(t, r, conn, 300)
	_, _, hedges := rt.Stats()
	t.Logf("300 calls, one instance stalling on one call in 5: p50 %v, p99 %v, %d hedges", p50, p99, hedges)
	if hedges == 0 {
		t.Error("no hedges sent")
	}
}

// Hedging at a latency quantile: no hedge before MinSamples calls, then
// the hedge goes out at about the 90th percentile and cuts the stalls.
func TestHedgingAtQuantile(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	const minSamples = 60
	rt, err := retry.New(retry.Config{Idempotent: idempotent, Hedge: map[string]retry.Hedge{check: {Quantile: 0.9, MinSamples: minSamples}}})
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, r, rt, roundrobin.Name, nil)
	r.WaitAll(conn, 0, 1, 2)
	// Learning: minSamples-1 calls (WaitAll's among them), then one that
	// every instance stalls. Its hedge delay is asked for with
	// minSamples-1 samples recorded, so no hedge may go out for it. (A
	// call's own sample is recorded just before its result is delivered,
	// so the next call is the first whose hedge could go out.)
	if calls, _, _ := rt.Stats(); calls >= minSamples-1 {
		t.Fatalf("WaitAll made %d calls; the test needs fewer than %d", calls, minSamples-1)
	}
	for calls, _, _ := rt.Stats(); calls < minSamples-1; calls, _, _ = rt.Stats() {
		if _, err := r.Call(context.Background(), conn); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range r.Srv {
		s.StallSome(100*time.Millisecond, 1, 1)
	}
	if _, err := r.Call(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	if _, _, h := rt.Stats(); h != 0 {
		t.Fatalf("%d hedges before MinSamples calls", h)
	}
	for _, s := range r.Srv {
		s.StallSome(0, 0, 0)
	}
	r.Srv[0].StallSome(stall, 1, 5)
	p50, p99 := hedgedCalls(t, r, conn, 300)
	_, _, hedges := rt.Stats()
	t.Logf("quantile hedging: p50 %v, p99 %v, %d hedges in 300 calls", p50, p99, hedges)
	if hedges == 0 {
		t.Error("no hedges sent")
	}
}
