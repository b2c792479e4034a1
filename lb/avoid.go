package lb

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"
)

type callKey struct{}

// call is what a call's context tells lodestar's balancers.
type call struct {
	avoid  []string
	onPick func(addr string)
	rec    *Recorder
}

func callOf(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

// Recorder keeps the address of the instance that lodestar's balancers
// picked for the latest attempt of a call.
type Recorder struct {
	mu   sync.Mutex
	addr string
}

// Addr returns the address picked last, or "" if none yet.
func (r *Recorder) Addr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addr
}

func (r *Recorder) set(addr string) {
	r.mu.Lock()
	r.addr = addr
	r.mu.Unlock()
}

// recordCtx is a context carrying a call and its recorder in one
// allocation: Record is on the path of every retried method's calls.
type recordCtx struct {
	context.Context
	c call
	r Recorder
}

func (x *recordCtx) Value(key any) any {
	if key == (callKey{}) {
		return &x.c
	}
	return x.Context.Value(key)
}

// Record returns ctx whose calls report to the returned recorder the
// instance picked for each attempt (retries use it to avoid that instance
// next time). It replaces any recorder set on ctx before.
func Record(ctx context.Context) (context.Context, *Recorder) {
	x := &recordCtx{Context: ctx}
	if prev := callOf(ctx); prev != nil {
		x.c = *prev
	}
	x.c.rec = &x.r
	return x, &x.r
}

// Avoid returns ctx asking lodestar's balancers to pick, for calls made
// with it, an instance other than addrs ("host:port") where another is
// ready. Retries use it to try a different instance than the one that
// failed. When every ready instance is avoided, one of them is picked
// all the same.
func Avoid(ctx context.Context, addrs ...string) context.Context {
	if len(addrs) == 0 {
		return ctx
	}
	c := &call{}
	if prev := callOf(ctx); prev != nil {
		*c = *prev
	}
	c.avoid = append(slices.Clip(c.avoid), addrs...)
	return context.WithValue(ctx, callKey{}, c)
}

// OnPick returns ctx asking lodestar's balancers to call fn with the
// address of the instance picked for each attempt of calls made with it,
// as soon as it is picked (hedging uses it to send its hedge elsewhere),
// after any function set on ctx before. fn must not block.
func OnPick(ctx context.Context, fn func(addr string)) context.Context {
	c := &call{onPick: fn}
	if prev := callOf(ctx); prev != nil {
		*c = *prev
		if before := prev.onPick; before != nil {
			c.onPick = func(addr string) { before(addr); fn(addr) }
		} else {
			c.onPick = fn
		}
	}
	return context.WithValue(ctx, callKey{}, c)
}

// Notifier tells a call's context of the instance picked for it.
type Notifier struct {
	fn  func(addr string)
	rec *Recorder
}

// Picked tells of the pick of addr.
func (n Notifier) Picked(addr string) {
	if n.rec != nil {
		n.rec.set(addr)
	}
	if n.fn != nil {
		n.fn(addr)
	}
}

// Steer is for balancers: it reports whether the call of ctx should avoid
// addr, and returns whom to tell of a pick.
func Steer(ctx context.Context, addr string) (avoid bool, n Notifier) {
	c := callOf(ctx)
	if c == nil {
		return false, Notifier{}
	}
	return slices.Contains(c.avoid, addr), Notifier{fn: c.onPick, rec: c.rec}
}

// OutlierEjection configures the ejection of failing instances, which
// every lodestar policy applies: an instance whose calls fail
// ConsecutiveFailures times in a row (with UNAVAILABLE, INTERNAL, UNKNOWN,
// DATA_LOSS or DEADLINE_EXCEEDED), or whose failure rate over about its
// last 20 calls is at least FailureRate and at least twice its peers'
// (once it and a peer have seen FailureRateMinCalls calls), gets no new
// calls for BaseEjectionTime
// times the number of times it has been ejected (at most
// MaxEjectionTime), but never more than MaxEjectionPercent of the
// instances are ejected at once. An ejected instance gets calls again when
// its time is up; if it fails again, it is ejected for longer. Ejection
// counts reset once an instance has gone MaxEjectionTime without being
// ejected.
//
// In a service config it is the "outlierEjection" field of the top-level
// lodestar policy's config; with lodestar.Dial, lodestar.WithOutlierEjection.
type OutlierEjection struct {
	Disabled            bool     `json:"disabled,omitempty"`
	ConsecutiveFailures int      `json:"consecutiveFailures,omitempty"` // default 5
	BaseEjectionTime    Duration `json:"baseEjectionTime,omitempty"`    // default 30s
	MaxEjectionTime     Duration `json:"maxEjectionTime,omitempty"`     // default 5m
	MaxEjectionPercent  int      `json:"maxEjectionPercent,omitempty"`  // default 50
	FailureRate         float64  `json:"failureRate,omitempty"`         // default 0.5; 1 ejects only instances failing every call
	FailureRateMinCalls int      `json:"failureRateMinCalls,omitempty"` // default 20
}

// WithDefaults returns o with its zero fields set to the defaults, or an
// error naming a field out of range.
func (o OutlierEjection) WithDefaults() (OutlierEjection, error) {
	if o.ConsecutiveFailures == 0 {
		o.ConsecutiveFailures = 5
	}
	if o.BaseEjectionTime == 0 {
		o.BaseEjectionTime = Duration(30 * time.Second)
	}
	if o.MaxEjectionTime == 0 {
		o.MaxEjectionTime = Duration(5 * time.Minute)
	}
	if o.MaxEjectionPercent == 0 {
		o.MaxEjectionPercent = 50
	}
	if o.FailureRate == 0 {
		o.FailureRate = 0.5
	}
	if o.FailureRateMinCalls == 0 {
		o.FailureRateMinCalls = 20
	}
	switch {
	case o.ConsecutiveFailures < 1:
		return o, fmt.Errorf("outlierEjection: consecutiveFailures %d: want at least 1", o.ConsecutiveFailures)
	case o.BaseEjectionTime < Duration(time.Millisecond):
		return o, fmt.Errorf("outlierEjection: baseEjectionTime %v: want at least 1ms", time.Duration(o.BaseEjectionTime))
	case o.MaxEjectionTime < o.BaseEjectionTime:
		return o, fmt.Errorf("outlierEjection: maxEjectionTime %v: want at least baseEjectionTime %v", time.Duration(o.MaxEjectionTime), time.Duration(o.BaseEjectionTime))
	case o.MaxEjectionPercent < 1 || o.MaxEjectionPercent > 100:
		return o, fmt.Errorf("outlierEjection: maxEjectionPercent %d: want 1 to 100", o.MaxEjectionPercent)
	case !(o.FailureRate > 0 && o.FailureRate <= 1):
		return o, fmt.Errorf("outlierEjection: failureRate %v: want more than 0, at most 1", o.FailureRate)
	case o.FailureRateMinCalls < 1:
		return o, fmt.Errorf("outlierEjection: failureRateMinCalls %d: want at least 1", o.FailureRateMinCalls)
	}
	return o, nil
}

// EjectionField is the field of a top-level lodestar policy's config that
// holds its OutlierEjection.
const EjectionField = "outlierEjection"

// String shows the duration as configs write it.
func (d Duration) String() string { return time.Duration(d).String() }

var _ json.Marshaler = Duration(0)
