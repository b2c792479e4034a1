// Package latency is response-time priority: each call goes to the
// cheaper of two instances drawn at random, where an instance's cost is
// the moving average of its latency times the calls it has in flight
// (plus one), divided by the square of its moving success rate (which
// weighs each call's outcome by 0.2). A slow
// instance or a failing one thus gets little traffic, and fast instances
// share the rest by load.
//
// Two rules keep it honest at the edges:
//   - an instance whose latency average is more than SlowFactor times the
//     other candidate's is not chosen over it, however idle it is: without
//     this rule, many concurrent callers would keep sending it a share
//     that sets their p99;
//   - an instance not picked for ProbeInterval gets the next call it is
//     drawn for (one call per interval), so a slow or failing instance is
//     still probed, and traffic returns to it once it recovers.
//
// Averages decay with time (an exponentially weighted moving average with
// time constant Decay), so they follow change within a few Decays however
// fast or slow calls come. Errors a server answers with on purpose (such
// as NOT_FOUND or INVALID_ARGUMENT) count as successes; UNAVAILABLE,
// INTERNAL, UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and DATA_LOSS
// count as failures; calls the caller cancelled are not counted.
//
//	{"loadBalancingConfig":[{"lodestar_latency":{"decay":"1s","probeInterval":"500ms","slowFactor":4}}]}
package latency

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/lb/internal/pick"
)

// Name is the policy's name in service configs.
const Name = "lodestar_latency"

// Config is the policy's configuration; zero fields take the defaults.
type Config struct {
	// Decay is the time constant of the moving averages (default 1s,
	// at least 10ms).
	Decay lb.Duration `json:"decay,omitempty"`
	// ProbeInterval is how long an instance may go without a call before
	// it is sent one regardless of its cost (default 500ms, at least 10ms).
	ProbeInterval lb.Duration `json:"probeInterval,omitempty"`
	// SlowFactor: an instance slower on average than this many times the
	// other candidate is passed over whatever the load (default 4, at
	// least 1.5).
	SlowFactor float64 `json:"slowFactor,omitempty"`
}

// Defaults.
const (
	DefaultDecay         = time.Second
	DefaultProbeInterval = 500 * time.Millisecond
	DefaultSlowFactor    = 4.0
)

// successWeight is the weight of one call's outcome in the success rate:
// after 10 failures in a row an instance costs about 90 times more.
const successWeight = 0.2

// minSuccess bounds the success penalty: an instance failing every call
// costs 400 times a healthy one of the same latency, not infinitely more.
const minSuccess = 0.05

func init() {
	pick.Register(Name, func(js json.RawMessage) (pick.Spec, error) {
		cfg := Config{}
		if err := pick.Strict(Name, js, &cfg); err != nil {
			return nil, err
		}
		return cfg.withDefaults()
	})
}

func (c Config) withDefaults() (Config, error) {
	if c.Decay == 0 {
		c.Decay = lb.Duration(DefaultDecay)
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = lb.Duration(DefaultProbeInterval)
	}
	if c.SlowFactor == 0 {
		c.SlowFactor = DefaultSlowFactor
	}
	switch {
	case time.Duration(c.Decay) < 10*time.Millisecond:
		return c, fmt.Errorf("%s: decay %v: want at least 10ms", Name, time.Duration(c.Decay))
	case time.Duration(c.ProbeInterval) < 10*time.Millisecond:
		return c, fmt.Errorf("%s: probeInterval %v: want at least 10ms", Name, time.Duration(c.ProbeInterval))
	case c.SlowFactor < 1.5 || math.IsInf(c.SlowFactor, 0) || math.IsNaN(c.SlowFactor):
		return c, fmt.Errorf("%s: slowFactor %v: want at least 1.5", Name, c.SlowFactor)
	}
	return c, nil
}

// NewPolicy implements the frame's Spec.
func (c Config) NewPolicy() pick.Policy {
	return &policy{
		decay: float64(c.Decay), probe: int64(c.ProbeInterval), slow: c.SlowFactor,
		now: func() int64 { return time.Now().UnixNano() },
	}
}

type policy struct {
	decay float64 // ns
	probe int64   // ns
	slow  float64
	now   func() int64
	stats pick.Keyed[stats]
}

// stats are one instance's moving averages.
type stats struct {
	inflight atomic.Int64
	lastPick atomic.Int64 // ns

	mu      sync.Mutex
	latency float64 // ns; 0 until the first sample
	success float64 // 0..1
	last    int64   // ns of the last sample
}

func (p *policy) Picker(eps []pick.Endpoint) balancer.Picker {
	ready := pick.ReadyOnly(eps)
	if len(ready) == 0 {
		return nil
	}
	now := p.now()
	all := p.stats.Sync(eps, func() *stats {
		s := &stats{success: 1}
		s.lastPick.Store(now)
		return s
	})
	// A new instance starts at the mean latency of the known ones, so it
	// is neither flooded nor starved while its first calls return.
	var sum float64
	var known int
	for _, s := range all {
		s.mu.Lock()
		if s.latency > 0 {
			sum += s.latency
			known++
		}
		s.mu.Unlock()
	}
	pk := &picker{p: p}
	for i, e := range eps {
		if !e.Ready() {
			continue
		}
		s := all[i]
		s.mu.Lock()
		if s.latency == 0 && known > 0 {
			s.latency, s.last = sum/float64(known), now
		}
		s.mu.Unlock()
		pk.ends = append(pk.ends, end{picker: e.Picker, stats: s})
	}
	return pk
}

type end struct {
	picker balancer.Picker
	stats  *stats
}

type picker struct {
	p    *policy
	ends []end
}

func (pk *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	n := len(pk.ends)
	e := &pk.ends[0]
	start := pk.p.now()
	if n > 1 {
		i := rand.IntN(n)
		j := (i + 1 + rand.IntN(n-1)) % n
		e = pk.choose(&pk.ends[i], &pk.ends[j], start)
	}
	res, err := e.picker.Pick(info)
	if err != nil {
		return res, err
	}
	s := e.stats
	s.lastPick.Store(start)
	s.inflight.Add(1)
	return pick.OnDone(res, func(di balancer.DoneInfo) {
		s.inflight.Add(-1)
		pk.p.observe(s, start, di.Err)
	}), nil
}

// choose returns the candidate to call.
func (pk *picker) choose(a, b *end, now int64) *end {
	for _, c := range [2]*end{a, b} {
		if last := c.stats.lastPick.Load(); now-last > pk.p.probe && c.stats.lastPick.CompareAndSwap(last, now) {
			return c // its probe: only the caller that wins the swap sends it
		}
	}
	latA, ca := a.stats.cost()
	latB, cb := b.stats.cost()
	switch {
	case latA > pk.p.slow*latB:
		return b
	case latB > pk.p.slow*latA:
		return a
	case cb < ca:
		return b
	}
	return a
}

// cost returns the instance's effective latency (its average, divided
// by the square of its success rate, so that failing fast is not fast)
// and its cost (that times its calls in flight plus one).
func (s *stats) cost() (latency, cost float64) {
	s.mu.Lock()
	latency, succ := s.latency, s.success
	s.mu.Unlock()
	succ = max(succ, minSuccess)
	eff := (latency + 1) / (succ * succ)
	return eff, eff * float64(s.inflight.Load()+1)
}

// observe folds one finished call into the instance's averages.
func (p *policy) observe(s *stats, start int64, err error) {
	ok := 1.0
	switch status.Code(err) {
	case codes.Canceled:
		return // the caller gave up: says nothing about the instance
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.DeadlineExceeded, codes.ResourceExhausted, codes.DataLoss:
		ok = 0
	}
	now := p.now()
	lat := float64(max(now-start, 1))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latency == 0 {
		s.latency, s.success, s.last = lat, ok, now
		return
	}
	w := math.Exp(-float64(max(now-s.last, 0)) / p.decay)
	s.latency = s.latency*w + lat*(1-w)
	// The success rate moves per call, not per unit of time: a fast
	// failing instance answers many calls in a moment, and each must
	// count.
	s.success = s.success*(1-successWeight) + ok*successWeight
	s.last = max(s.last, now)
}
