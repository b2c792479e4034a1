// Package retry retries failed unary calls of idempotent methods on
// another instance, with backoff and jitter, within the caller's deadline
// and within a budget that keeps retries to a fixed share of calls; and
// hedges declared methods: when the first attempt is slow, a second goes
// to another instance and the first answer wins.
//
//	r, err := retry.New(retry.Config{
//		Idempotent: func(method string) bool { return method == "/user.UserService/GetUser" },
//		Hedge: map[string]retry.Hedge{"/user.UserService/GetUser": {Quantile: 0.95}},
//	})
//	grpc.NewClient(target, grpc.WithChainUnaryInterceptor(r.UnaryClientInterceptor()))
//
// Only methods Idempotent approves are retried or hedged: a call of any
// other method may have run its handler before it failed. (Calls that
// never left the client are retried by grpc itself, transparently.)
// Retries go elsewhere through lb.Avoid, which lodestar's balancers
// honour. Hedging runs on github.com/failsafe-go/failsafe-go's hedge
// policy, each attempt with its own reply message. Streams pass through
// untouched.
package retry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/hedgepolicy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/lodestar-rpc/lodestar/lb"
)

// Config configures retries and hedging; zero fields take the defaults.
type Config struct {
	// Idempotent says which methods ("/pkg.Service/Method") may be
	// retried or hedged. Nil means none.
	Idempotent func(method string) bool
	// MaxAttempts is the most attempts of one call, the first included
	// (default 3, at most 5).
	MaxAttempts int
	// InitialBackoff bounds the wait before a retry (default 50ms); each
	// later one may wait twice as long, up to MaxBackoff (default 500ms).
	// Each wait is drawn uniformly up to its bound (full jitter). The
	// first retry does not wait when a lodestar balancer steers it to
	// another instance than the one that failed.
	InitialBackoff, MaxBackoff time.Duration
	// Codes are the status codes retried (default UNAVAILABLE).
	Codes []codes.Code
	// BudgetRatio is the most retries and hedges as a share of calls
	// over the last 10 seconds (default 0.2), over and above
	// BudgetReserve (default 10) that a quiet client may spend at once.
	BudgetRatio   float64
	BudgetReserve int
	// Hedge lists the methods to hedge, which must also be idempotent.
	Hedge map[string]Hedge
}

// Hedge configures hedging of one method.
type Hedge struct {
	// Delay before the hedge is sent, when the first attempt has not
	// answered. Either Delay or Quantile.
	Delay time.Duration
	// Quantile of the method's recent latencies to use as the delay
	// (e.g. 0.95), once MinSamples (default 100) calls have been seen;
	// no hedging before.
	Quantile   float64
	MinSamples uint
	// MaxHedges is how many hedges a call may send (default 1).
	MaxHedges int
}

func (c Config) withDefaults() (Config, error) {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 3
	}
	if c.InitialBackoff == 0 {
		c.InitialBackoff = 50 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 500 * time.Millisecond
	}
	if len(c.Codes) == 0 {
		c.Codes = []codes.Code{codes.Unavailable}
	}
	if c.BudgetRatio == 0 {
		c.BudgetRatio = 0.2
	}
	if c.BudgetReserve == 0 {
		c.BudgetReserve = 10
	}
	switch {
	case c.MaxAttempts < 1 || c.MaxAttempts > 5:
		return c, fmt.Errorf("retry: maxAttempts %d: want 1 to 5", c.MaxAttempts)
	case c.InitialBackoff < 0 || c.MaxBackoff < c.InitialBackoff:
		return c, fmt.Errorf("retry: backoff %v to %v: want 0 < initial ≤ max", c.InitialBackoff, c.MaxBackoff)
	case !(c.BudgetRatio > 0 && c.BudgetRatio <= 1):
		return c, fmt.Errorf("retry: budgetRatio %v: want more than 0, at most 1", c.BudgetRatio)
	case c.BudgetReserve < 0:
		return c, fmt.Errorf("retry: budgetReserve %d: want 0 or more", c.BudgetReserve)
	}
	for _, code := range c.Codes {
		if code == codes.OK {
			return c, errors.New("retry: codes: OK is not an error")
		}
	}
	for m, h := range c.Hedge {
		switch {
		case c.Idempotent == nil || !c.Idempotent(m):
			return c, fmt.Errorf("retry: hedge %s: the method is not declared idempotent", m)
		case (h.Delay > 0) == (h.Quantile > 0):
			return c, fmt.Errorf("retry: hedge %s: set either delay (%v) or quantile (%v)", m, h.Delay, h.Quantile)
		case h.Quantile < 0 || h.Quantile >= 1:
			return c, fmt.Errorf("retry: hedge %s: quantile %v: want between 0 and 1", m, h.Quantile)
		case h.MaxHedges < 0 || h.MaxHedges > 4:
			return c, fmt.Errorf("retry: hedge %s: maxHedges %d: want 0 (1) to 4", m, h.MaxHedges)
		}
	}
	return c, nil
}

// Retrier is a configured set of client interceptors and their budget.
type Retrier struct {
	cfg    Config
	budget budget
	hedges map[string]hedgepolicy.HedgePolicy[proto.Message]

	calls, retries, hedged atomic.Int64
}

// New returns a retrier; an invalid config is an error naming the field.
func New(cfg Config) (*Retrier, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &Retrier{cfg: cfg, hedges: map[string]hedgepolicy.HedgePolicy[proto.Message]{}}
	r.budget.init(cfg.BudgetRatio, float64(cfg.BudgetReserve))
	for m, h := range cfg.Hedge {
		var b hedgepolicy.Builder[proto.Message]
		if h.Quantile > 0 {
			min := h.MinSamples
			if min == 0 {
				min = 100
			}
			b = hedgepolicy.NewBuilderWithDelayQuantile[proto.Message](h.Quantile, 1000, min)
		} else {
			b = hedgepolicy.NewBuilderWithDelay[proto.Message](h.Delay)
		}
		if h.MaxHedges > 0 {
			b = b.WithMaxHedges(h.MaxHedges)
		}
		// An attempt that failed in a way worth retrying does not end the
		// call while another is in flight.
		b = b.CancelIf(func(_ proto.Message, err error) bool { return err == nil || !r.retryable(err) })
		r.hedges[m] = b.Build()
	}
	return r, nil
}

// Stats returns the calls seen, the retries sent and the hedges sent.
func (r *Retrier) Stats() (calls, retries, hedges int64) {
	return r.calls.Load(), r.retries.Load(), r.hedged.Load()
}

func (r *Retrier) retryable(err error) bool {
	return slices.Contains(r.cfg.Codes, status.Code(err))
}

// UnaryClientInterceptor retries and hedges unary calls.
func (r *Retrier) UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if r.cfg.Idempotent == nil || !r.cfg.Idempotent(method) {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		r.calls.Add(1)
		r.budget.deposit()
		if h, ok := r.hedges[method]; ok {
			if msg, ok := reply.(proto.Message); ok {
				return r.hedge(ctx, h, method, req, msg, cc, invoker, opts)
			}
		}
		return r.attempts(ctx, method, req, reply, cc, invoker, opts)
	}
}

// attempts makes the call, retrying on other instances.
func (r *Retrier) attempts(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts []grpc.CallOption) error {
	actx, rec := lb.Record(ctx)
	bound := r.cfg.InitialBackoff
	for attempt := 1; ; attempt++ {
		err := invoker(actx, method, req, reply, cc, opts...)
		if err == nil || !r.retryable(err) || attempt >= r.cfg.MaxAttempts || ctx.Err() != nil {
			return err
		}
		a := rec.Addr()
		wait := time.Duration(0)
		if a == "" || attempt > 1 {
			// Backoff, unless this is the first retry and it goes to
			// another instance than the one that failed: that one need
			// not wait for anything to recover.
			wait = time.Duration(rand.Int64N(int64(bound) + 1))
			bound = min(2*bound, r.cfg.MaxBackoff)
		}
		if d, ok := ctx.Deadline(); ok && time.Until(d) <= wait {
			return err // no time left for another attempt
		}
		if !r.budget.withdraw() {
			return err
		}
		r.retries.Add(1)
		if a != "" {
			actx, rec = lb.Record(lb.Avoid(actx, a))
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return err
			}
		}
	}
}

// hedge runs attempts through the method's hedge policy, each into its
// own reply and each avoiding the instances earlier attempts went to, and
// copies the winner's reply into reply.
func (r *Retrier) hedge(ctx context.Context, h hedgepolicy.HedgePolicy[proto.Message], method string, req any, reply proto.Message, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts []grpc.CallOption) error {
	var mu sync.Mutex
	var avoid []string // instances attempts went to
	started := 0
	// Attempts never touch reply: a late one may still start after the
	// winner's reply has been delivered into it.
	replyType := reply.ProtoReflect().Type()
	res, err := failsafe.With[proto.Message](h).WithContext(ctx).GetWithExecution(func(exec failsafe.Execution[proto.Message]) (proto.Message, error) {
		mu.Lock()
		n := started
		started++
		actx := lb.Avoid(exec.Context(), avoid...)
		mu.Unlock()
		if n > 0 {
			if !r.budget.withdraw() {
				// Retryable, so not final: the attempts in flight decide.
				return nil, status.Error(codes.Unavailable, "retry: no budget left to hedge")
			}
			r.hedged.Add(1)
		}
		actx = lb.OnPick(actx, func(addr string) {
			mu.Lock()
			avoid = append(avoid, addr)
			mu.Unlock()
		})
		out := &attempt{msg: replyType.New().Interface()}
		return out, r.attempts(actx, method, req, out.msg, cc, invoker, out.options(opts))
	})
	if a, ok := res.(*attempt); ok {
		a.deliver(reply, opts) // the winner's peer, header and trailer, even when it failed
	}
	return err
}

// attempt is one hedged attempt: its own reply, and its own copies of the
// call options grpc writes into, so that attempts do not race on the
// caller's.
type attempt struct {
	msg             proto.Message
	peer            peer.Peer
	header, trailer metadata.MD
}

func (a *attempt) ProtoReflect() protoreflect.Message { return a.msg.ProtoReflect() }

// options returns opts with the output options redirected to a.
func (a *attempt) options(opts []grpc.CallOption) []grpc.CallOption {
	out := make([]grpc.CallOption, 0, len(opts))
	for _, o := range opts {
		switch o.(type) {
		case grpc.PeerCallOption:
			out = append(out, grpc.Peer(&a.peer))
		case grpc.HeaderCallOption:
			out = append(out, grpc.Header(&a.header))
		case grpc.TrailerCallOption:
			out = append(out, grpc.Trailer(&a.trailer))
		default:
			out = append(out, o)
		}
	}
	return out
}

// deliver copies the attempt's reply and outputs to the caller's.
func (a *attempt) deliver(reply proto.Message, opts []grpc.CallOption) {
	proto.Reset(reply)
	proto.Merge(reply, a.msg)
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.PeerCallOption:
			*o.PeerAddr = a.peer
		case grpc.HeaderCallOption:
			*o.HeaderAddr = a.header
		case grpc.TrailerCallOption:
			*o.TrailerAddr = a.trailer
		}
	}
}

// budget keeps retries and hedges within ratio × calls + reserve over a
// sliding window of 10 seconds (in 1-second buckets): a busy client may
// absorb a burst of failures with the retries its recent calls earned,
// and a client failing everywhere settles at the ratio.
type budget struct {
	mu             sync.Mutex
	ratio, reserve float64
	now            func() time.Time
	calls, spent   [10]float64
	head           int
	start          time.Time
}

func (b *budget) init(ratio, reserve float64) {
	b.ratio, b.reserve, b.now = ratio, reserve, time.Now
	b.start = b.now()
}

// advance moves the head to now's bucket; b.mu is held.
func (b *budget) advance() {
	now := b.now()
	steps := int(now.Sub(b.start) / time.Second)
	if steps <= 0 {
		return
	}
	for range min(steps, len(b.calls)) {
		b.head = (b.head + 1) % len(b.calls)
		b.calls[b.head], b.spent[b.head] = 0, 0
	}
	b.start = now.Add(-now.Sub(b.start) % time.Second)
}

func (b *budget) deposit() {
	b.mu.Lock()
	b.advance()
	b.calls[b.head]++
	b.mu.Unlock()
}

func (b *budget) withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.advance()
	var calls, spent float64
	for i := range b.calls {
		calls, spent = calls+b.calls[i], spent+b.spent[i]
	}
	if spent+1 > b.reserve+b.ratio*calls {
		return false
	}
	b.spent[b.head]++
	return true
}
