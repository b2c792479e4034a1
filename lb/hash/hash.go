// Package hash is consistent hashing by a request key, such as a user id:
// calls with the same key go to the same instance, and adding or removing
// one of N instances moves about 1/N of the keys.
//
// The key is the one set on the call's context with WithKey or, when none
// is, the value of the metadata header named in the config:
//
//	{"loadBalancingConfig":[{"lodestar_consistent_hash":{"header":"x-user-id"}}]}
//
// A call without a key goes to a random ready instance.
//
// Keys are placed with a Maglev lookup table (Eisenbud et al., NSDI 2016):
// a pick is one hash and one table read, every instance owns a share of
// the table proportional to its registered weight to within one slot, and
// a change of instances moves little more than the keys it must. grpc's
// ring_hash_experimental reads its key only from a header, ignores
// lodestar weights, and with a ring of default size balances 100
// instances over 100,000 keys to a max/mean load near 2 (lodestar: 1.08);
// the README compares the two.
//
// An instance still making its first connection holds the calls for its
// keys until it is ready (a few milliseconds on a healthy network), so
// keys do not land elsewhere while a client starts. An instance that has
// been ready and is no longer, or whose connection failed, keeps its slots
// but its keys go, for as long as it is away, to the next usable instance
// in the table (the same for every caller), and come back when it returns.
// So do the keys of an ejected instance, and a retry steered away from an
// instance with lb.Avoid. All clients that see the same instances compute
// the same table, so they agree on every key's owner.
package hash

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"

	"github.com/lodestar-rpc/lodestar/internal/quote"
	"github.com/lodestar-rpc/lodestar/lb/internal/pick"
)

// Name is the policy's name in service configs.
const Name = "lodestar_consistent_hash"

// Config is the policy's configuration.
type Config struct {
	// Header is the metadata header whose value is the key when the
	// context carries none (lower case; not a "-bin" header). Empty means
	// keys come only from WithKey.
	Header string `json:"header,omitempty"`
	// TableSize is the number of slots of the lookup table, a prime. 0
	// picks the smallest of 65537, 655373 and 6553577 that is at least
	// 100 times the number of instances; the larger, the closer shares are
	// to the weights.
	TableSize int `json:"tableSize,omitempty"`
}

type keyCtx struct{}

// WithKey returns ctx carrying the hash key of the calls made with it; it
// takes precedence over the configured header.
func WithKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, keyCtx{}, key)
}

func init() {
	pick.Register(Name, func(js json.RawMessage) (pick.Spec, error) {
		cfg := Config{}
		if err := pick.Strict(Name, js, &cfg); err != nil {
			return nil, err
		}
		return cfg, cfg.validate()
	})
}

func (c Config) validate() error {
	if h := c.Header; h != "" {
		if h != strings.ToLower(h) || strings.HasSuffix(h, "-bin") || strings.HasPrefix(h, "grpc-") || strings.HasPrefix(h, ":") {
			return fmt.Errorf("%s: header %s: want a lower-case header that is not binary (-bin), reserved (grpc-) or a pseudo-header", Name, quote.Bounded(h))
		}
		for _, r := range h {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
				return fmt.Errorf("%s: header %s: character %q not allowed in a header name", Name, quote.Bounded(h), r)
			}
		}
	}
	if n := c.TableSize; n != 0 && (n < 7 || n > 1<<24 || !isPrime(n)) {
		return fmt.Errorf("%s: tableSize %d: want a prime from 7 to %d", Name, n, 1<<24)
	}
	return nil
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// NewPolicy implements the frame's Spec.
func (c Config) NewPolicy() pick.Policy { return &policy{cfg: c} }

type policy struct {
	cfg Config
	// The table is rebuilt only when the instances or their weights
	// change, not when their connections do.
	members []member
	table   []int32
	seen    map[string]bool // instances that have been ready
}

// member is what the table depends on.
type member struct {
	addr   string
	weight int
}

// TableSize returns the table size used for n instances when the config
// sets none.
func TableSize(n int) int {
	for _, m := range []int{65537, 655373, 6553577} {
		if m >= 100*n {
			return m
		}
	}
	return 6553577
}

func (p *policy) Picker(eps []pick.Endpoint) balancer.Picker {
	var anyReady bool
	members := make([]member, len(eps))
	for i, e := range eps {
		members[i] = member{addr: e.Addr, weight: max(e.Instance.Metadata.Weight, 1)}
		anyReady = anyReady || e.Ready()
	}
	if !anyReady {
		return nil
	}
	if !equalMembers(members, p.members) {
		size := p.cfg.TableSize
		if size == 0 {
			size = TableSize(len(members))
		}
		p.members, p.table = members, Table(members2(members), size)
	}
	// Which instances have been ready: one that has not yet is starting,
	// and its calls wait for it.
	seen := make(map[string]bool, len(eps))
	pk := &picker{header: p.cfg.Header, table: p.table, pickers: make([]balancer.Picker, len(eps))}
	for i, e := range eps {
		was := p.seen[e.Addr]
		switch {
		case e.Ready():
			was = true
			pk.pickers[i] = e.Picker
			pk.ready = append(pk.ready, e.Picker)
		case !was && e.State != connectivity.TransientFailure:
			pk.pickers[i] = e.Picker // its picker queues the call until it connects
		}
		seen[e.Addr] = was
	}
	p.seen = seen
	return pk
}

// allTried reports whether every usable owner has been skipped.
func allTried(tried []bool, pickers []balancer.Picker) bool {
	for i, pk := range pickers {
		if pk != nil && !tried[i] {
			return false
		}
	}
	return true
}

func equalMembers(a, b []member) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func members2(ms []member) []Member {
	out := make([]Member, len(ms))
	for i, m := range ms {
		out[i] = Member{Name: m.addr, Weight: m.weight}
	}
	return out
}

type picker struct {
	header  string
	table   []int32           // slot → index into pickers
	pickers []balancer.Picker // nil when that instance is not usable
	ready   []balancer.Picker
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	key, ok := info.Ctx.Value(keyCtx{}).(string)
	if !ok && p.header != "" {
		if md, found := metadata.FromOutgoingContext(info.Ctx); found {
			if v := md.Get(p.header); len(v) > 0 {
				key, ok = v[0], true
			}
		}
	}
	if !ok {
		return p.ready[rand.IntN(len(p.ready))].Pick(info)
	}
	slot := int(Sum(key) % uint64(len(p.table)))
	skipped := false
	var tried []bool         // owners already skipped, once a skip happens
	for range len(p.table) { // bounded: some instance is usable
		owner := p.table[slot]
		if pk := p.pickers[owner]; pk != nil && (tried == nil || !tried[owner]) {
			res, err := pk.Pick(info)
			if err != pick.ErrSkip {
				return res, err
			}
			// Avoided or ejected: the next owner in the table. Each owner
			// is asked once, so a call that skips them all stops here.
			if tried == nil {
				tried = make([]bool, len(p.pickers))
			}
			tried[owner], skipped = true, true
			if !slices.Contains(tried, false) || allTried(tried, p.pickers) {
				break
			}
		}
		slot++
		if slot == len(p.table) {
			slot = 0
		}
	}
	if skipped {
		return balancer.PickResult{}, pick.ErrSkip // the frame's last try takes the owner
	}
	return p.ready[0].Pick(info)
}
