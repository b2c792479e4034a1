// Package flow protects a server with flow rules per method: a rate limit
// (a token bucket, with an optional warm-up and an optional bounded wait
// for a token) and a concurrency limit. A call a rule rejects gets
// RESOURCE_EXHAUSTED with a message naming the rule, at once, before its
// handler runs.
//
//	lim, err := flow.New(flow.Rule{Method: "/order.OrderService/CreateOrder", QPS: 100})
//	grpc.NewServer(
//		grpc.ChainUnaryInterceptor(lim.UnaryServerInterceptor()),
//		grpc.ChainStreamInterceptor(lim.StreamServerInterceptor()))
//
// Rules can be replaced while serving with Update; a rule whose
// parameters did not change keeps its state (tokens, calls in flight).
// For streams, a rule counts stream openings (rate) and open streams
// (concurrency).
package flow

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Rule limits the calls of one method, of every method of a service, or
// of every method.
type Rule struct {
	// Method is a full method name ("/order.OrderService/CreateOrder"), a
	// service ("/order.OrderService/*", the methods share the limits) or
	// "*" (all calls share them). The most specific rule applies. "*"
	// does not limit health checks (grpc.health.v1): a rule must name them.
	Method string `json:"method"`
	// QPS is the most calls admitted per second (0: no rate limit).
	QPS float64 `json:"qps,omitempty"`
	// Burst is how many calls may be admitted at once above the steady
	// rate (default QPS/20, at least 1): small, so that a second never
	// admits much more than QPS.
	Burst int `json:"burst,omitempty"`
	// WarmUp ramps the rate from a third of QPS up to QPS over this long
	// after the rule starts or after it has seen no call for as long, so
	// a cold service (empty caches, cold connections) is not hit by the
	// full rate at once (0: no warm-up).
	WarmUp time.Duration `json:"warmUp,omitempty"`
	// MaxWait is how long a call may wait for a token before it is
	// rejected (0: rejected at once); a wait never outlasts the call's
	// deadline.
	MaxWait time.Duration `json:"maxWait,omitempty"`
	// Concurrency is the most calls in flight at once (0: no limit).
	Concurrency int `json:"concurrency,omitempty"`
}

// String names the rule as rejection messages do.
func (r Rule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "flow rule %s", r.Method)
	if r.QPS > 0 {
		fmt.Fprintf(&b, " qps=%g", r.QPS)
		if r.Burst > 0 {
			fmt.Fprintf(&b, " burst=%d", r.Burst)
		}
		if r.WarmUp > 0 {
			fmt.Fprintf(&b, " warmUp=%v", r.WarmUp)
		}
		if r.MaxWait > 0 {
			fmt.Fprintf(&b, " maxWait=%v", r.MaxWait)
		}
	}
	if r.Concurrency > 0 {
		fmt.Fprintf(&b, " concurrency=%d", r.Concurrency)
	}
	return b.String()
}

// Validate reports what is wrong with the rule.
func (r Rule) Validate() error {
	switch {
	case r.Method != "*" && !(strings.HasPrefix(r.Method, "/") && strings.Count(r.Method, "/") == 2 && !strings.HasSuffix(r.Method, "/") && !strings.HasPrefix(r.Method, "//")):
		return fmt.Errorf("flow: rule method %q: want \"/pkg.Service/Method\", \"/pkg.Service/*\" or \"*\"", r.Method)
	case r.QPS < 0 || math.IsNaN(r.QPS) || math.IsInf(r.QPS, 0):
		return fmt.Errorf("flow: rule %s: qps %v: want 0 (no limit) or more", r.Method, r.QPS)
	case r.Burst < 0:
		return fmt.Errorf("flow: rule %s: burst %d: want 0 (default) or more", r.Method, r.Burst)
	case r.WarmUp < 0 || r.MaxWait < 0:
		return fmt.Errorf("flow: rule %s: warmUp %v, maxWait %v: want 0 or more", r.Method, r.WarmUp, r.MaxWait)
	case r.Concurrency < 0:
		return fmt.Errorf("flow: rule %s: concurrency %d: want 0 (no limit) or more", r.Method, r.Concurrency)
	case r.QPS == 0 && r.Concurrency == 0:
		return fmt.Errorf("flow: rule %s: limits nothing: set qps or concurrency", r.Method)
	case r.QPS == 0 && (r.Burst != 0 || r.WarmUp != 0 || r.MaxWait != 0):
		return fmt.Errorf("flow: rule %s: burst, warmUp and maxWait need qps", r.Method)
	}
	return nil
}

// Limiter applies a set of rules.
type Limiter struct {
	rules atomic.Pointer[ruleSet]
	mu    sync.Mutex // serialises Update
	now   func() time.Time
}

type ruleSet struct {
	exact   map[string]*limit // full method
	service map[string]*limit // "/pkg.Service/"
	all     *limit
}

// New returns a limiter with rules; an invalid rule, or two rules for the
// same method, is an error naming it.
func New(rules ...Rule) (*Limiter, error) {
	l := &Limiter{now: time.Now}
	if err := l.Update(rules...); err != nil {
		return nil, err
	}
	return l, nil
}

// Update replaces the rules. A rule whose parameters did not change keeps
// its state; on error nothing changes.
func (l *Limiter) Update(rules ...Rule) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.rules.Load()
	set := &ruleSet{exact: map[string]*limit{}, service: map[string]*limit{}}
	seen := map[string]bool{}
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			return err
		}
		if seen[r.Method] {
			return fmt.Errorf("flow: two rules for %s", r.Method)
		}
		seen[r.Method] = true
		var lim *limit
		prev := old.find(r.Method)
		switch {
		case prev != nil && prev.rule == r:
			lim = prev
		case prev != nil:
			// Changed: the calls in flight under the old rule still count
			// against the new concurrency limit.
			lim = newLimit(r, l.now())
			lim.inflight = prev.inflight
		default:
			lim = newLimit(r, l.now())
		}
		switch {
		case r.Method == "*":
			set.all = lim
		case strings.HasSuffix(r.Method, "/*"):
			set.service[strings.TrimSuffix(r.Method, "*")] = lim
		default:
			set.exact[r.Method] = lim
		}
	}
	l.rules.Store(set)
	return nil
}

// Rules returns the rules in force.
func (l *Limiter) Rules() []Rule {
	set := l.rules.Load()
	var out []Rule
	if set.all != nil {
		out = append(out, set.all.rule)
	}
	for _, m := range []map[string]*limit{set.service, set.exact} {
		for _, lim := range m {
			out = append(out, lim.rule)
		}
	}
	return out
}

// find returns the limit stored for exactly this rule method.
func (s *ruleSet) find(method string) *limit {
	if s == nil {
		return nil
	}
	switch {
	case method == "*":
		return s.all
	case strings.HasSuffix(method, "/*"):
		return s.service[strings.TrimSuffix(method, "*")]
	}
	return s.exact[method]
}

// healthPrefix starts the methods of grpc's health service, which the "*"
// rule leaves alone: a health check rejected under load
// would take a busy instance out of every client's list.
const healthPrefix = "/grpc.health.v1.Health/"

// match returns the most specific limit for a full method name, or nil.
func (s *ruleSet) match(fullMethod string) *limit {
	if lim, ok := s.exact[fullMethod]; ok {
		return lim
	}
	if len(s.service) > 0 {
		if i := strings.LastIndexByte(fullMethod, '/'); i > 0 {
			if lim, ok := s.service[fullMethod[:i+1]]; ok {
				return lim
			}
		}
	}
	if strings.HasPrefix(fullMethod, healthPrefix) {
		return nil // "*" leaves health checks alone
	}
	return s.all
}

// Admit admits one call of fullMethod, waiting up to the rule's MaxWait
// (and never past ctx's deadline) for a token, and returns the function to
// call when the call ends; or a RESOURCE_EXHAUSTED error naming the rule.
func (l *Limiter) Admit(ctx context.Context, fullMethod string) (done func(), err error) {
	lim := l.rules.Load().match(fullMethod)
	if lim == nil {
		return func() {}, nil
	}
	return lim.admit(ctx, l.now)
}

// UnaryServerInterceptor applies the rules to unary calls.
func (l *Limiter) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		done, err := l.Admit(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		defer done()
		return handler(ctx, req)
	}
}

// StreamServerInterceptor applies the rules to stream openings and open
// streams.
func (l *Limiter) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		done, err := l.Admit(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		defer done()
		return handler(srv, ss)
	}
}

// limit is one rule's state.
type limit struct {
	rule     Rule
	bucket   *rate.Limiter // nil without QPS
	inflight *atomic.Int64 // shared with the rule this one replaced

	mu       sync.Mutex // guards the warm-up state
	coldFrom time.Time  // start of the current warm-up
	lastCall time.Time
	warm     bool
}

// coldFactor: a warm-up starts at a third of the rate, as Sentinel's does.
const coldFactor = 3

func newLimit(r Rule, now time.Time) *limit {
	lim := &limit{rule: r, coldFrom: now, lastCall: now, inflight: new(atomic.Int64)}
	if r.QPS > 0 {
		burst := r.Burst
		if burst == 0 {
			burst = max(1, int(r.QPS/20))
		}
		start := rate.Limit(r.QPS)
		if r.WarmUp > 0 {
			start = rate.Limit(r.QPS / coldFactor)
		}
		lim.bucket = rate.NewLimiter(start, burst) // starts with one burst of tokens
		lim.warm = r.WarmUp == 0
	}
	return lim
}

func (lim *limit) admit(ctx context.Context, clock func() time.Time) (func(), error) {
	r := lim.rule
	// Every call counts, so that a concurrency limit added later sees
	// the calls already in flight.
	if n := lim.inflight.Add(1); r.Concurrency > 0 && n > int64(r.Concurrency) {
		lim.inflight.Add(-1)
		return nil, lim.reject("concurrency limit reached")
	}
	release := func() { lim.inflight.Add(-1) }
	if lim.bucket != nil {
		now := clock()
		if r.WarmUp > 0 {
			lim.warmUp(now)
		}
		res := lim.bucket.ReserveN(now, 1)
		wait := res.DelayFrom(now)
		if d, ok := ctx.Deadline(); ok && now.Add(wait).After(d) {
			wait = math.MaxInt64 // would outlast the call
		}
		if !res.OK() || wait > r.MaxWait {
			res.CancelAt(now)
			release()
			return nil, lim.reject("rate limit reached")
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				res.Cancel()
				release()
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
	}
	return release, nil
}

// warmUp sets the bucket's rate for now: it ramps from QPS/3 to QPS over
// WarmUp from the start of the rule or the end of an idle spell as long.
func (lim *limit) warmUp(now time.Time) {
	r := lim.rule
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if now.Sub(lim.lastCall) > r.WarmUp {
		lim.coldFrom, lim.warm = now, false // idle: cold again
	}
	lim.lastCall = now
	if lim.warm {
		return
	}
	f := float64(now.Sub(lim.coldFrom)) / float64(r.WarmUp)
	if f >= 1 {
		lim.warm = true
		lim.bucket.SetLimitAt(now, rate.Limit(r.QPS))
		return
	}
	lim.bucket.SetLimitAt(now, rate.Limit(r.QPS/coldFactor+(r.QPS-r.QPS/coldFactor)*f))
}

func (lim *limit) reject(why string) error {
	return status.Errorf(codes.ResourceExhausted, "%s: %s", lim.rule, why)
}
