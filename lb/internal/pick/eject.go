package pick

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lodestar-rpc/lodestar/lb"
)

// ErrSkip is what an instance's picker returns when the call should not go
// to it (avoided by the caller, or ejected); the frame's picker then picks
// again, and a policy may try another instance itself.
var ErrSkip = errors.New("pick: instance skipped")

// noSkipKey marks the last pick of a call, which takes whatever comes.
type noSkipKey struct{}

// health is one instance's record for outlier ejection.
type health struct {
	consecutive atomic.Int64
	until       atomic.Int64 // ejected until (unix ns); 0 when not ejected

	calls atomic.Int64 // outcomes seen

	mu        sync.Mutex
	times     int     // ejections so far
	lastEnded int64   // when the last ejection ended (unix ns)
	rate      float64 // failure rate over about the last 20 calls
}

// ejector applies one OutlierEjection config to a frame's instances.
type ejector struct {
	cfg lb.OutlierEjection
	now func() int64

	mu  sync.Mutex
	all []*health // the frame's current instances
}

func (e *ejector) setAll(all []*health) {
	e.mu.Lock()
	e.all = all
	e.mu.Unlock()
}

func ejectable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.DataLoss, codes.DeadlineExceeded:
		return true
	}
	return false
}

// rateWeight is one call's weight in an instance's failure rate: the rate
// follows about the last 20 calls.
const rateWeight = 1.0 / 20

// done records a call's outcome and ejects the instance if it has failed
// too often in a row, or fails far more often than its peers.
func (e *ejector) done(h *health, err error) {
	if status.Code(err) == codes.Canceled {
		return // the caller gave up: says nothing about the instance
	}
	failed := ejectable(err)
	rate := h.record(failed)
	if !failed {
		h.consecutive.Store(0)
		return
	}
	byRow := h.consecutive.Add(1) >= int64(e.cfg.ConsecutiveFailures)
	byRate := h.calls.Load() >= int64(e.cfg.FailureRateMinCalls) && rate >= e.cfg.FailureRate
	if !byRow && !byRate {
		return
	}
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if h.until.Load() > now {
		return // already ejected
	}
	if !byRow && !e.farAbovePeers(h, rate) {
		return
	}
	ejected := 0
	for _, o := range e.all {
		if o.until.Load() > now {
			ejected++
		}
	}
	if (ejected+1)*100 > e.cfg.MaxEjectionPercent*len(e.all) {
		return // would eject too many: keep it
	}
	h.mu.Lock()
	if h.lastEnded > 0 && now-h.lastEnded > int64(e.cfg.MaxEjectionTime) {
		h.times = 0 // behaved long enough: forgiven
	}
	h.times++
	d := min(int64(e.cfg.BaseEjectionTime)*int64(h.times), int64(e.cfg.MaxEjectionTime))
	h.lastEnded = now + d
	h.rate = 0 // judged afresh when it returns
	h.mu.Unlock()
	h.consecutive.Store(0)
	h.until.Store(now + d)
}

// farAbovePeers reports whether rate is at least twice the average failure
// rate of the other instances that have seen enough calls (there must be
// one); e.mu is held.
func (e *ejector) farAbovePeers(h *health, rate float64) bool {
	var sum float64
	n := 0
	for _, o := range e.all {
		if o == h || o.calls.Load() < int64(e.cfg.FailureRateMinCalls) {
			continue
		}
		o.mu.Lock()
		sum += o.rate
		o.mu.Unlock()
		n++
	}
	return n > 0 && rate >= 2*sum/float64(n)
}

// record folds one outcome into the instance's failure rate and returns
// the rate.
func (h *health) record(failed bool) float64 {
	f := 0.0
	if failed {
		f = 1
	}
	h.calls.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rate = h.rate*(1-rateWeight) + f*rateWeight
	return h.rate
}

// tracked wraps one instance's picker: it skips the instance when the call
// avoids it or it is ejected, and reports outcomes to the ejector.
type tracked struct {
	addr   string
	inner  balancer.Picker
	health *health
	ej     *ejector // nil when ejection is off
}

func (t *tracked) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	skip, picked := lb.Steer(info.Ctx, t.addr)
	if !skip && t.ej != nil {
		until := t.health.until.Load()
		skip = until != 0 && until > t.ej.now()
	}
	if skip && info.Ctx.Value(noSkipKey{}) == nil {
		return balancer.PickResult{}, ErrSkip
	}
	res, err := t.inner.Pick(info)
	if err != nil {
		return res, err
	}
	picked.Picked(t.addr)
	if t.ej == nil {
		return res, nil
	}
	return OnDone(res, func(di balancer.DoneInfo) { t.ej.done(t.health, di.Err) }), nil
}

// skipping is the frame's picker: it picks again when the policy chose a
// skipped instance, and the last time takes whatever comes.
type skipping struct {
	inner balancer.Picker
	tries int
}

func (p *skipping) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	for range p.tries {
		res, err := p.inner.Pick(info)
		if err != ErrSkip {
			return res, err
		}
	}
	info.Ctx = context.WithValue(info.Ctx, noSkipKey{}, true)
	return p.inner.Pick(info)
}

func unixNano() int64 { return time.Now().UnixNano() }
