// Package pick is the common frame of lodestar's balancers: one pick_first
// child per instance (grpc's endpointsharding), and a Policy that turns the
// children into a picker. Policies nest: a policy that picks a subset
// (locality, canary) hands the subset to a child policy named in its
// config, so every lodestar policy is both a grpc balancer and a building
// block of another.
package pick

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/lodestar-rpc/lodestar/discovery"
	"github.com/lodestar-rpc/lodestar/internal/quote"
	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/registry"
)

// Endpoint is one instance as a policy sees it: what discovery resolved,
// and the state and picker of its connection.
type Endpoint struct {
	Addr     string            // first address, the instance's identity
	Instance registry.Instance // metadata; zero when the resolver sets none
	Endpoint resolver.Endpoint
	State    connectivity.State
	Picker   balancer.Picker // the pick_first child's picker
}

// Ready reports whether calls can be sent to e now.
func (e *Endpoint) Ready() bool { return e.State == connectivity.Ready }

// Policy builds pickers. One Policy serves one balancer (or one subset of
// a parent policy) for its life, so it may keep per-instance statistics
// from one picker to the next.
type Policy interface {
	// Picker returns a picker over eps, which hold every known instance in
	// any state, sorted by address; or nil when none of them can take a
	// call. It is not called concurrently.
	Picker(eps []Endpoint) balancer.Picker
}

// Spec is a parsed, validated policy configuration.
type Spec interface {
	// NewPolicy returns a fresh policy with this configuration.
	NewPolicy() Policy
}

// Parser parses a policy's JSON configuration (possibly empty) into a
// Spec, with an error that names what is wrong.
type Parser func(js json.RawMessage) (Spec, error)

var (
	mu      sync.RWMutex
	parsers = map[string]Parser{}
)

// Register makes a policy available under name: as a grpc balancer (for
// service configs and lodestar.WithBalancer) and as a child of the nesting
// policies. It is called from init functions.
func Register(name string, parse Parser) {
	register(name, parse)
	balancer.Register(builder{name: name, parse: parse})
}

func register(name string, parse Parser) {
	mu.Lock()
	defer mu.Unlock()
	parsers[name] = parse
}

// RoundRobin is the name of the plain round-robin child policy, the
// default child of the nesting policies (package lb/roundrobin registers
// the same policy as a grpc balancer, under its own name).
const RoundRobin = "round_robin"

func init() { register(RoundRobin, RoundRobinParser(RoundRobin)) }

// RoundRobinParser parses the (empty) config of round robin registered
// under name.
func RoundRobinParser(name string) Parser {
	return func(js json.RawMessage) (Spec, error) {
		if err := Strict(name, js, &struct{}{}); err != nil {
			return nil, err
		}
		return rrSpec{}, nil
	}
}

// Strict decodes js into v, refusing unknown fields, with an error naming
// the policy. An empty js, or null (as grpc's own policies take it), means
// defaults; anything else must be one JSON object with nothing after it.
// Errors quote the config and the parts of it they name by a bounded
// prefix.
func Strict(name string, js json.RawMessage, v any) error {
	trimmed := trimJSONSpace(js)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return nil
	}
	if d := depth(trimmed, MaxDepth); d > MaxDepth {
		return fmt.Errorf("%s: config %s: nested more than %d levels deep", name, quote.Shown(string(js)), MaxDepth)
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: config %s: %w", name, quote.Shown(string(js)), decodeErr(err))
	}
	if dec.InputOffset() != int64(len(trimmed)) {
		// Offset in js of the first byte after the value and its spaces.
		lead, after := len(js)-len(bytes.TrimLeft(js, jsonSpace)), trimmed[dec.InputOffset():]
		at := lead + int(dec.InputOffset()) + len(after) - len(bytes.TrimLeft(after, jsonSpace))
		return fmt.Errorf("%s: config %s: data after the first JSON value, at byte %d", name, quote.Shown(string(js)), at)
	}
	if trimmed[0] != '{' {
		return fmt.Errorf("%s: config %s: want a JSON object", name, quote.Shown(string(js)))
	}
	return nil
}

// trimJSONSpace returns js without the white space JSON allows around a
// value (space, tab, CR, LF; not the other Unicode spaces).
func trimJSONSpace(js []byte) []byte { return bytes.Trim(js, jsonSpace) }

const jsonSpace = " \t\r\n"

// ParseChild parses a child policy given as {"<name>": {<config>}}; an
// empty js or null means round_robin. parent names the nesting policy in
// errors.
func ParseChild(parent string, js json.RawMessage) (Spec, error) {
	trimmed := trimJSONSpace(js)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return rrSpec{}, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &m); err != nil {
		return nil, fmt.Errorf("%s: pick %s: want {\"<policy>\": {...}}: %w", parent, quote.Shown(string(js)), decodeErr(err))
	}
	if len(m) != 1 {
		return nil, fmt.Errorf("%s: pick %s: want exactly one policy, got %d", parent, quote.Shown(string(js)), len(m))
	}
	for name, cfg := range m {
		mu.RLock()
		parse, ok := parsers[name]
		known := make([]string, 0, len(parsers))
		for n := range parsers {
			known = append(known, n)
		}
		mu.RUnlock()
		if !ok {
			sort.Strings(known)
			return nil, fmt.Errorf("%s: pick: unknown policy %s (known: %s; import its lodestar/lb package)", parent, quote.Bounded(name), strings.Join(known, ", "))
		}
		spec, err := parse(cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: pick: %w", parent, err)
		}
		return spec, nil
	}
	panic("unreachable")
}

// lbConfig is what ParseConfig hands grpc.
type lbConfig struct {
	serviceconfig.LoadBalancingConfig
	spec  Spec
	eject lb.OutlierEjection
}

// splitEjection takes the outlierEjection field out of a policy's JSON
// config, returning the rest for the policy's parser.
func splitEjection(name string, js json.RawMessage) (json.RawMessage, lb.OutlierEjection, error) {
	var ej lb.OutlierEjection
	trimmed := trimJSONSpace(js)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		ej, err := ej.WithDefaults()
		return js, ej, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &m); err != nil {
		return nil, ej, fmt.Errorf("%s: config %s: %w", name, quote.Shown(string(js)), decodeErr(err))
	}
	raw, ok := m[lb.EjectionField]
	if ok {
		if err := Strict(name+": "+lb.EjectionField, raw, &ej); err != nil {
			return nil, ej, err
		}
		delete(m, lb.EjectionField)
		rest, err := json.Marshal(m)
		if err != nil {
			return nil, ej, err
		}
		js = rest
	}
	ej, err := ej.WithDefaults()
	if err != nil {
		return nil, ej, fmt.Errorf("%s: %v", name, err)
	}
	return js, ej, nil
}

type builder struct {
	name  string
	parse Parser
}

func (b builder) Name() string { return b.name }

func (b builder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	rest, ej, err := splitEjection(b.name, js)
	if err != nil {
		return nil, err
	}
	spec, err := b.parse(rest)
	if err != nil {
		return nil, err
	}
	return &lbConfig{spec: spec, eject: ej}, nil
}

func (b builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	bal := &frame{ClientConn: cc}
	bal.child = endpointsharding.NewBalancer(bal, opts, balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return bal
}

// frame lets endpointsharding keep one pick_first child per instance and
// replaces its picker with the policy's.
type frame struct {
	balancer.ClientConn // embedded to intercept UpdateState
	child               balancer.Balancer

	cfg    *lbConfig // guarded by grpc's serialisation of balancer calls
	policy atomic.Pointer[policyBox]
	health Keyed[health] // per instance, across pickers
}

type policyBox struct {
	Policy
	ej *ejector // nil when ejection is off
}

func (f *frame) UpdateClientConnState(ccs balancer.ClientConnState) error {
	cfg, ok := ccs.BalancerConfig.(*lbConfig)
	if !ok {
		return fmt.Errorf("pick: unexpected balancer config %T", ccs.BalancerConfig)
	}
	if cfg != f.cfg {
		f.cfg = cfg
		box := &policyBox{Policy: cfg.spec.NewPolicy()}
		if !cfg.eject.Disabled {
			box.ej = &ejector{cfg: cfg.eject, now: unixNano}
		}
		f.policy.Store(box)
	}
	return f.child.UpdateClientConnState(balancer.ClientConnState{
		ResolverState: pickfirst.EnableHealthListener(ccs.ResolverState),
	})
}

func (f *frame) ResolverError(err error) { f.child.ResolverError(err) }

// UpdateSubConnState completes balancer.Balancer; the children create their
// SubConns with a StateListener, so grpc does not call it for them.
func (f *frame) UpdateSubConnState(sc balancer.SubConn, st balancer.SubConnState) {
	//lint:ignore SA1019 forwarding the interface method frame implements
	f.child.UpdateSubConnState(sc, st)
}

func (f *frame) Close() { f.child.Close() }

func (f *frame) ExitIdle() { f.child.ExitIdle() }

// UpdateState receives endpointsharding's state (calls to it are
// serialised by grpc) and publishes the policy's picker.
func (f *frame) UpdateState(state balancer.State) {
	pb := f.policy.Load()
	if pb == nil {
		f.ClientConn.UpdateState(state)
		return
	}
	children := endpointsharding.ChildStatesFromPicker(state.Picker)
	eps := make([]Endpoint, 0, len(children))
	for _, c := range children {
		e := Endpoint{Endpoint: c.Endpoint, State: c.State.ConnectivityState, Picker: c.State.Picker}
		if len(c.Endpoint.Addresses) > 0 {
			e.Addr = c.Endpoint.Addresses[0].Addr
		}
		if in, ok := discovery.Instance(c.Endpoint); ok {
			e.Instance = in
		} else {
			e.Instance.Addr, e.Instance.Metadata.Weight = e.Addr, registry.DefaultWeight
		}
		eps = append(eps, e)
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i].Addr < eps[j].Addr })
	hs := f.health.Sync(eps, func() *health { return new(health) })
	for i := range eps {
		eps[i].Picker = &tracked{addr: eps[i].Addr, inner: eps[i].Picker, health: hs[i], ej: pb.ej}
	}
	if pb.ej != nil {
		pb.ej.setAll(hs)
	}
	if p := pb.Picker(WithoutZeroWeight(eps)); p != nil {
		f.ClientConn.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: &skipping{inner: p, tries: skipTries}})
		return
	}
	f.ClientConn.UpdateState(state) // nothing ready: endpointsharding's picker queues or fails
}

// skipTries is how many picks a call gets before it takes a skipped
// (avoided or ejected) instance: with half the instances skipped, a random
// policy finds another in 6 tries 98% of the time.
const skipTries = 6

// WithoutZeroWeight drops the instances registered with weight 0 ("no new
// calls"), unless no ready instance is left without them.
func WithoutZeroWeight(eps []Endpoint) []Endpoint {
	zero, readyPositive := 0, false
	for i := range eps {
		if eps[i].Instance.Metadata.Weight <= 0 {
			zero++
		} else if eps[i].Ready() {
			readyPositive = true
		}
	}
	if zero == 0 || !readyPositive {
		return eps
	}
	out := make([]Endpoint, 0, len(eps)-zero)
	for _, e := range eps {
		if e.Instance.Metadata.Weight > 0 {
			out = append(out, e)
		}
	}
	return out
}

// ReadyOnly returns the ready endpoints of eps.
func ReadyOnly(eps []Endpoint) []Endpoint {
	out := make([]Endpoint, 0, len(eps))
	for _, e := range eps {
		if e.Ready() {
			out = append(out, e)
		}
	}
	return out
}

type rrSpec struct{}

func (rrSpec) NewPolicy() Policy { return rrPolicy{} }

type rrPolicy struct{}

func (rrPolicy) Picker(eps []Endpoint) balancer.Picker {
	ready := ReadyOnly(eps)
	if len(ready) == 0 {
		return nil
	}
	p := &rrPicker{pickers: make([]balancer.Picker, len(ready))}
	for i, e := range ready {
		p.pickers[i] = e.Picker
	}
	p.next.Store(rand.Uint32N(uint32(len(ready))))
	return p
}

type rrPicker struct {
	pickers []balancer.Picker
	next    atomic.Uint32
}

func (p *rrPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	i := p.next.Add(1) % uint32(len(p.pickers))
	return p.pickers[i].Pick(info)
}
