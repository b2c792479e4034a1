// Package shed rejects calls early when a server is overloaded, instead of
// queueing them until every caller times out. It is off unless a server
// installs it.
//
// The rule is the one of BBR-style limiters (as in Kratos): while the
// process uses more than CPUThreshold of the CPU it may use (or within a
// second of the last rejection), a call is rejected when the calls in
// flight exceed what the server has shown it can complete: the most calls
// it passed per second in any bucket of the window times the shortest
// average call duration (Little's law). Below the threshold nothing is
// rejected. Rejected calls get RESOURCE_EXHAUSTED at once, before their
// handler runs, so that clients retry elsewhere.
//
// CPU use is read from the cgroup (v2 cpu.stat and cpu.max, so container
// limits count) or else /proc/stat, every 250ms, smoothed; tests and
// unusual platforms pass their own CPU function.
package shed

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Config configures a Shedder; zero fields take the defaults.
type Config struct {
	// CPUThreshold is the CPU use, as a share of what the process may
	// use, above which calls may be shed (default 0.8).
	CPUThreshold float64
	// Window is how far back the limiter looks (default 10s, in 100
	// buckets).
	Window time.Duration
	// CPU returns the current CPU use from 0 to 1; nil reads the
	// cgroup or /proc/stat.
	CPU func() float64
	// Exempt names methods never shed (lodestar.NewServer exempts health
	// checks: failing them under load would take a busy instance out of
	// every client's list and pile its load on the others).
	Exempt func(fullMethod string) bool
}

// Shedder is an adaptive limiter; Close stops its CPU sampler.
type Shedder struct {
	threshold float64
	cpu       func() float64
	exempt    func(string) bool
	now       func() time.Time

	inflight atomic.Int64
	lastDrop atomic.Int64 // unix ns

	mu      sync.Mutex
	period  time.Duration
	buckets []bucket
	head    int
	start   time.Time

	stop chan struct{}
	done chan struct{}
}

type bucket struct {
	passed int64
	rtSum  time.Duration
}

const buckets = 100

// New returns a shedder; an invalid config is an error naming the field.
// Without Config.CPU it starts a sampler goroutine that Close stops.
func New(cfg Config) (*Shedder, error) {
	if cfg.CPUThreshold == 0 {
		cfg.CPUThreshold = 0.8
	}
	if cfg.Window == 0 {
		cfg.Window = 10 * time.Second
	}
	if !(cfg.CPUThreshold > 0 && cfg.CPUThreshold <= 1) {
		return nil, fmt.Errorf("shed: cpuThreshold %v: want more than 0, at most 1", cfg.CPUThreshold)
	}
	if cfg.Window < time.Second {
		return nil, fmt.Errorf("shed: window %v: want at least 1s", cfg.Window)
	}
	s := &Shedder{threshold: cfg.CPUThreshold, cpu: cfg.CPU, exempt: cfg.Exempt, now: time.Now,
		period: cfg.Window / buckets, buckets: make([]bucket, buckets)}
	s.start = s.now()
	if s.cpu == nil {
		sm, err := newSampler()
		if err != nil {
			return nil, err
		}
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go sm.run(s.stop, s.done)
		s.cpu = sm.load
	}
	return s, nil
}

// Close stops the CPU sampler, if any. It is safe to call twice.
func (s *Shedder) Close() {
	if s.stop == nil {
		return
	}
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// advance moves the head to now's bucket; s.mu is held.
func (s *Shedder) advance(now time.Time) {
	steps := int(now.Sub(s.start) / s.period)
	if steps <= 0 {
		return
	}
	for range min(steps, buckets) {
		s.head = (s.head + 1) % buckets
		s.buckets[s.head] = bucket{}
	}
	s.start = now.Add(-now.Sub(s.start) % s.period)
}

// maxFlight is the most calls the server has shown it completes in the
// time one takes: max passed per second × shortest average duration.
// It is 0 when the window holds no completed call.
func (s *Shedder) maxFlight(now time.Time) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(now)
	var maxPass int64
	minRT := time.Duration(math.MaxInt64)
	for i := range s.buckets {
		if i == s.head {
			continue // still filling
		}
		b := s.buckets[i]
		if b.passed == 0 {
			continue
		}
		maxPass = max(maxPass, b.passed)
		minRT = min(minRT, b.rtSum/time.Duration(b.passed))
	}
	if maxPass == 0 {
		return 0
	}
	perSecond := float64(maxPass) * float64(time.Second) / float64(s.period)
	return perSecond * minRT.Seconds()
}

// Allow admits a call and returns the function to call when it ends, or
// an error with code RESOURCE_EXHAUSTED.
func (s *Shedder) Allow() (func(), error) {
	now := s.now()
	if s.overloaded(now) {
		if limit := s.maxFlight(now); limit > 0 && float64(s.inflight.Load()) >= math.Ceil(limit) {
			s.lastDrop.Store(now.UnixNano())
			return nil, status.Errorf(codes.ResourceExhausted, "shed: server overloaded (cpu %.0f%%, %d calls in flight, limit %.0f)", 100*s.cpu(), s.inflight.Load(), math.Ceil(limit))
		}
	}
	s.inflight.Add(1)
	return func() {
		end := s.now()
		s.inflight.Add(-1)
		s.mu.Lock()
		s.advance(end)
		b := &s.buckets[s.head]
		b.passed++
		b.rtSum += end.Sub(now)
		s.mu.Unlock()
	}, nil
}

// overloaded: CPU above the threshold, or a rejection in the last second
// (so that shedding does not flap with each CPU sample).
func (s *Shedder) overloaded(now time.Time) bool {
	if s.cpu() > s.threshold {
		return true
	}
	last := s.lastDrop.Load()
	return last != 0 && now.UnixNano()-last < int64(time.Second)
}

// UnaryServerInterceptor sheds unary calls.
func (s *Shedder) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if s.exempt != nil && s.exempt(info.FullMethod) {
			return handler(ctx, req)
		}
		done, err := s.Allow()
		if err != nil {
			return nil, err
		}
		defer done()
		return handler(ctx, req)
	}
}

// StreamServerInterceptor sheds stream openings.
func (s *Shedder) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if s.exempt != nil && s.exempt(info.FullMethod) {
			return handler(srv, ss)
		}
		done, err := s.Allow()
		if err != nil {
			return err
		}
		defer done()
		return handler(srv, ss)
	}
}
