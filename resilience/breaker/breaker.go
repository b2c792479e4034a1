// Package breaker is a circuit breaker per target service and method, as
// gRPC client interceptors: it opens when the ratio of failed calls, or of
// slow calls, over a rolling window reaches a threshold (once the window
// holds a minimum number of calls); while open, calls fail at once or get
// the method's fallback; after OpenFor it lets a few probe calls through
// (half-open) and closes when they all succeed.
//
//	b, err := breaker.New(
//		breaker.WithConfig(breaker.Config{FailureRatio: 0.5, SlowCall: 200 * time.Millisecond}),
//		breaker.WithFallback("/user.UserService/GetUser", breaker.FallbackOf(
//			func(ctx context.Context, req *userpb.UserRequest, cause error) (*userpb.UserResponse, error) {
//				return &userpb.UserResponse{Name: "unknown"}, nil
//			})))
//	grpc.NewClient(target,
//		grpc.WithChainUnaryInterceptor(b.UnaryClientInterceptor()),
//		grpc.WithChainStreamInterceptor(b.StreamClientInterceptor()))
//
// The state machine is github.com/sony/gobreaker/v2's; the rolling counts
// of failures and of slow calls are kept here, so that each has its own
// threshold. Put the breaker outside the retries (first in the chain), so
// that it sees the outcome of a call after its retries.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Config sets when a breaker opens and how it recovers; zero fields take
// the defaults.
type Config struct {
	// Window is the rolling window the ratios are computed over (default
	// 10s), in 10 buckets.
	Window time.Duration
	// MinCalls is the fewest calls in the window before the breaker may
	// open (default 20).
	MinCalls int
	// FailureRatio opens the breaker when this share of the window's
	// calls failed (default 0.5; 1 opens only when every call fails).
	FailureRatio float64
	// SlowCall is the duration over which a successful call counts as
	// slow (0: slowness is not counted).
	SlowCall time.Duration
	// SlowRatio opens the breaker when this share of the window's calls
	// was slow (default 0.5; needs SlowCall).
	SlowRatio float64
	// OpenFor is how long the breaker stays open before probing (default
	// 5s).
	OpenFor time.Duration
	// HalfOpenCalls is how many probe calls are let through when half
	// open; all must succeed (and not be slow) to close (default 3).
	HalfOpenCalls int
	// IsFailure says which errors count as failures (default: codes
	// UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN,
	// RESOURCE_EXHAUSTED and DATA_LOSS; an error the server answers on
	// purpose, such as NOT_FOUND, says nothing of its health, and a call
	// the caller cancelled is not counted at all).
	IsFailure func(error) bool
}

func (c Config) withDefaults() (Config, error) {
	if c.Window == 0 {
		c.Window = 10 * time.Second
	}
	if c.MinCalls == 0 {
		c.MinCalls = 20
	}
	if c.FailureRatio == 0 {
		c.FailureRatio = 0.5
	}
	if c.SlowRatio == 0 {
		c.SlowRatio = 0.5
	}
	if c.OpenFor == 0 {
		c.OpenFor = 5 * time.Second
	}
	if c.HalfOpenCalls == 0 {
		c.HalfOpenCalls = 3
	}
	if c.IsFailure == nil {
		c.IsFailure = DefaultIsFailure
	}
	switch {
	case c.Window < 10*time.Millisecond:
		return c, fmt.Errorf("breaker: window %v: want at least 10ms", c.Window)
	case c.MinCalls < 1:
		return c, fmt.Errorf("breaker: minCalls %d: want at least 1", c.MinCalls)
	case !(c.FailureRatio > 0 && c.FailureRatio <= 1):
		return c, fmt.Errorf("breaker: failureRatio %v: want more than 0, at most 1", c.FailureRatio)
	case !(c.SlowRatio > 0 && c.SlowRatio <= 1):
		return c, fmt.Errorf("breaker: slowRatio %v: want more than 0, at most 1", c.SlowRatio)
	case c.SlowCall < 0:
		return c, fmt.Errorf("breaker: slowCall %v: want 0 (off) or more", c.SlowCall)
	case c.OpenFor < time.Millisecond:
		return c, fmt.Errorf("breaker: openFor %v: want at least 1ms", c.OpenFor)
	case c.HalfOpenCalls < 1 || c.HalfOpenCalls > math.MaxUint32:
		return c, fmt.Errorf("breaker: halfOpenCalls %d: want at least 1", c.HalfOpenCalls)
	}
	return c, nil
}

// DefaultIsFailure is the default Config.IsFailure.
func DefaultIsFailure(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown, codes.ResourceExhausted, codes.DataLoss:
		return true
	}
	return false
}

// State is a breaker's state.
type State int

// The states.
const (
	Closed State = iota
	HalfOpen
	Open
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half-open"
	case Open:
		return "open"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

func fromGo(s gobreaker.State) State {
	switch s {
	case gobreaker.StateHalfOpen:
		return HalfOpen
	case gobreaker.StateOpen:
		return Open
	}
	return Closed
}

// Fallback answers a call in place of the service when the breaker is
// open (cause is an error with code UNAVAILABLE saying so) or when the
// call failed for good (cause is its error): it fills reply and returns
// nil, or returns the error the caller gets. FallbackOf makes one from a
// typed function.
type Fallback func(ctx context.Context, method string, req, reply any, cause error) error

// FallbackOf returns a Fallback from a function typed with the method's
// request and response messages; its response is copied into the
// caller's reply.
func FallbackOf[Req, Resp proto.Message](fn func(ctx context.Context, req Req, cause error) (Resp, error)) Fallback {
	return func(ctx context.Context, method string, req, reply any, cause error) error {
		in, ok := req.(Req)
		if !ok {
			return status.Errorf(codes.Internal, "breaker: fallback for %s takes %T, the call has %T", method, *new(Req), req)
		}
		out, err := fn(ctx, in, cause)
		if err != nil {
			return err
		}
		r, ok := reply.(proto.Message)
		if !ok {
			return status.Errorf(codes.Internal, "breaker: fallback for %s: reply %T is not a proto message", method, reply)
		}
		proto.Reset(r)
		proto.Merge(r, out)
		return nil
	}
}

// Option configures New.
type Option func(*Breakers) error

// WithConfig sets the configuration of every method without its own.
func WithConfig(c Config) Option {
	return func(b *Breakers) error {
		c, err := c.withDefaults()
		b.def = c
		return err
	}
}

// WithMethodConfig sets the configuration of one method
// ("/pkg.Service/Method").
func WithMethodConfig(method string, c Config) Option {
	return func(b *Breakers) error {
		if err := checkMethod(method); err != nil {
			return err
		}
		c, err := c.withDefaults()
		b.methods[method] = c
		return err
	}
}

// WithFallback sets the fallback of one method ("/pkg.Service/Method").
func WithFallback(method string, f Fallback) Option {
	return func(b *Breakers) error {
		if err := checkMethod(method); err != nil {
			return err
		}
		if f == nil {
			return fmt.Errorf("breaker: nil fallback for %s", method)
		}
		b.fallbacks[method] = f
		return nil
	}
}

// WithStateChange sets a function told of every state change; it must
// not block.
func WithStateChange(fn func(target, method string, from, to State)) Option {
	return func(b *Breakers) error {
		b.onChange = fn
		return nil
	}
}

func checkMethod(m string) error {
	if !strings.HasPrefix(m, "/") || strings.Count(m, "/") != 2 || strings.HasSuffix(m, "/") {
		return fmt.Errorf("breaker: method %q: want \"/pkg.Service/Method\"", m)
	}
	return nil
}

// Breakers holds one breaker per target and method, made on first use.
type Breakers struct {
	def       Config
	methods   map[string]Config
	fallbacks map[string]Fallback
	onChange  func(target, method string, from, to State)
	now       func() time.Time

	all sync.Map // key → *circuit
}

type key struct{ target, method string }

// New returns breakers with the options; an invalid option is an error
// naming it.
func New(opts ...Option) (*Breakers, error) {
	b := &Breakers{methods: map[string]Config{}, fallbacks: map[string]Fallback{}, now: time.Now}
	b.def, _ = Config{}.withDefaults()
	for _, o := range opts {
		if err := o(b); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// State returns the state of the breaker of target and method (Closed if
// it has not been used).
func (b *Breakers) State(target, method string) State {
	if c, ok := b.all.Load(key{target, method}); ok {
		return fromGo(c.(*circuit).cb.State())
	}
	return Closed
}

// circuit is one breaker: gobreaker's state machine and our window.
type circuit struct {
	cfg Config
	cb  *gobreaker.TwoStepCircuitBreaker[struct{}]
	win window
}

func (b *Breakers) circuit(target, method string) *circuit {
	k := key{target, method}
	if c, ok := b.all.Load(k); ok {
		return c.(*circuit)
	}
	cfg, ok := b.methods[method]
	if !ok {
		cfg = b.def
	}
	c := &circuit{cfg: cfg}
	c.win.init(cfg.Window, 10, b.now)
	c.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        target + method,
		MaxRequests: uint32(cfg.HalfOpenCalls),
		Timeout:     cfg.OpenFor,
		ReadyToTrip: func(gobreaker.Counts) bool {
			calls, failed, slow := c.win.sums()
			return calls >= cfg.MinCalls &&
				(float64(failed) >= cfg.FailureRatio*float64(calls) ||
					cfg.SlowCall > 0 && float64(slow) >= cfg.SlowRatio*float64(calls))
		},
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if to == gobreaker.StateClosed {
				c.win.reset() // a fresh window after recovery
			}
			if b.onChange != nil {
				b.onChange(target, method, fromGo(from), fromGo(to))
			}
		},
		IsExcluded: func(err error) bool { return errors.Is(err, errCanceled) },
	})
	actual, _ := b.all.LoadOrStore(k, c)
	return actual.(*circuit)
}

var (
	errSlow     = errors.New("slow call")
	errCanceled = errors.New("canceled by the caller")
)

// allow asks the breaker for a call; the returned function records its
// outcome.
func (c *circuit) allow() (func(err error, took time.Duration), error) {
	done, err := c.cb.Allow()
	if err != nil {
		return nil, err
	}
	return func(err error, took time.Duration) {
		switch {
		case status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled):
			done(errCanceled)
		case err != nil && c.cfg.IsFailure(err):
			c.win.add(true, false)
			done(err)
		case c.cfg.SlowCall > 0 && took > c.cfg.SlowCall:
			c.win.add(false, true)
			done(errSlow)
		default:
			c.win.add(false, false)
			done(nil)
		}
	}, nil
}

func (b *Breakers) openErr(target, method string, err error) error {
	return status.Errorf(codes.Unavailable, "breaker open for %s%s: %v", target, method, err)
}

// UnaryClientInterceptor guards unary calls.
func (b *Breakers) UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		c := b.circuit(cc.Target(), method)
		done, err := c.allow()
		if err != nil {
			return b.fallback(ctx, method, req, reply, b.openErr(cc.Target(), method, err))
		}
		start := b.now()
		err = invoker(ctx, method, req, reply, cc, opts...)
		done(err, b.now().Sub(start))
		if err != nil && c.cfg.IsFailure(err) && ctx.Err() == nil {
			return b.fallback(ctx, method, req, reply, err)
		}
		return err
	}
}

func (b *Breakers) fallback(ctx context.Context, method string, req, reply any, cause error) error {
	if f, ok := b.fallbacks[method]; ok {
		return f(ctx, method, req, reply, cause)
	}
	return cause
}

// StreamClientInterceptor guards stream openings: a stream counts as a
// failure when opening it fails or it ends with a failure, and slowness
// is not counted. Its outcome is known when a receive returns an error or
// io.EOF; a stream whose context ends first counts as cancelled (not at
// all). Fallbacks apply to unary calls only.
func (b *Breakers) StreamClientInterceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		c := b.circuit(cc.Target(), method)
		done, err := c.allow()
		if err != nil {
			return nil, b.openErr(cc.Target(), method, err)
		}
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			done(err, 0)
			return nil, err
		}
		st := &stream{ClientStream: s, done: done}
		// A stream abandoned before its end counts as cancelled, so that
		// it never holds a half-open probe for good.
		st.stop = context.AfterFunc(s.Context(), func() { st.finish(context.Canceled) })
		return st, nil
	}
}

// stream reports the stream's end to the breaker.
type stream struct {
	grpc.ClientStream
	once sync.Once
	done func(error, time.Duration)
	stop func() bool
}

func (s *stream) finish(err error) {
	s.once.Do(func() { s.done(err, 0) })
}

func (s *stream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		end := err
		if errors.Is(err, io.EOF) {
			end = nil
		}
		s.stop()
		s.finish(end)
	}
	return err
}
