package hash_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/metadata"

	"github.com/lodestar-rpc/lodestar/internal/lbtest"
	"github.com/lodestar-rpc/lodestar/lb"
	"github.com/lodestar-rpc/lodestar/lb/hash"
	"github.com/lodestar-rpc/lodestar/registry"
)

// TestMain checks for goroutines left over, giving those that are ending
// time to end (lbtest.VerifyTestMain).
func TestMain(m *testing.M) { lbtest.VerifyTestMain(m) }

func TestParseConfig(t *testing.T) {
	p := balancer.Get(hash.Name).(balancer.ConfigParser)
	for _, ok := range []string{``, `{}`, `{"header":"x-user-id"}`, `{"tableSize":65537}`} {
		if _, err := p.ParseConfig([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for js, want := range map[string]string{
		`{"header":"X-User"}`:       `header "X-User": want a lower-case`,
		`{"header":"x-id-bin"}`:     "not binary",
		`{"header":"grpc-timeout"}`: "reserved",
		`{"header":"x id"}`:         `character ' ' not allowed`,
		`{"tableSize":65536}`:       "tableSize 65536: want a prime",
		`{"key":"x"}`:               "unknown field",
	} {
		if _, err := p.ParseConfig([]byte(js)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one with %q", js, err, want)
		}
	}
}

// route calls once per key, from 8 callers, and returns the server index
// that answered each key; keyed sets the key on the context.
func route(t *testing.T, r *lbtest.Rig, conn *grpc.ClientConn, n int, keyed func(context.Context, string) context.Context) []int {
	t.Helper()
	out := make([]int, n)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for k := w; k < n; k += 8 {
				i, err := r.Call(keyed(context.Background(), fmt.Sprintf("user-%d", k)), conn)
				if err != nil {
					errs <- err
					return
				}
				out[k] = i
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return out
}

func byHeader(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "x-user-id", key)
}

// The same key reaches the same instance, by context key or by header, and
// a fifth instance added to four takes about a fifth of the keys.
func TestSameKeySameInstanceAndFifthTakesAFifth(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	conn := r.Dial(hash.Name, hash.Config{Header: "x-user-id"})
	r.WaitAll(conn, 0, 1, 2, 3) // keyless calls spread over the ready instances

	const keys = 10000
	first := route(t, r, conn, keys, hash.WithKey)
	again := route(t, r, conn, keys, byHeader)
	used := map[int]int{}
	for k := range first {
		if first[k] != again[k] {
			t.Fatalf("key user-%d: instance %d by context key, %d by header", k, first[k], again[k])
		}
		used[first[k]]++
	}
	t.Logf("4 instances, keys per instance %v", used)
	if len(used) != 4 {
		t.Errorf("keys used %d instances, want 4", len(used))
	}

	fifth := r.Add(registry.Metadata{})
	// Wait until the fifth instance is in the picker: a key it owns
	// reaches it.
	for k := 0; ; k++ {
		i, err := r.Call(hash.WithKey(context.Background(), fmt.Sprintf("probe-%d", k%1000)), conn)
		if err != nil {
			t.Fatal(err)
		}
		if i == fifth {
			break
		}
	}
	after := route(t, r, conn, keys, hash.WithKey)
	moved := 0
	for k := range first {
		if first[k] != after[k] {
			moved++
		}
	}
	frac := float64(moved) / keys
	t.Logf("adding a 5th instance to 4 moved %.1f%% of %d keys", 100*frac, keys)
	if frac < 0.15 || frac > 0.25 {
		t.Errorf("%.3f of keys moved, want 0.15 to 0.25", frac)
	}
}

// While an instance is stopped its keys go elsewhere, and no call fails;
// the other keys stay where they were.
func TestStoppedInstanceKeysFailOver(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	conn := r.Dial(hash.Name, nil)
	r.WaitAll(conn, 0, 1, 2)
	const keys = 600
	before := route(t, r, conn, keys, hash.WithKey)
	r.Srv[0].Stop()
	after := route(t, r, conn, keys, hash.WithKey) // route fails the test on any failed call
	for k := range before {
		if after[k] == 0 {
			t.Fatalf("key user-%d still reached the stopped instance", k)
		}
		if before[k] != 0 && before[k] != after[k] {
			t.Errorf("key user-%d moved from live instance %d to %d", k, before[k], after[k])
		}
	}
}

// Calls made at once after dialling, while connections are still being
// made, reach the owner of their key all the same: a starting owner holds
// its calls rather than letting them land elsewhere.
func TestKeysWaitForStartingOwner(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{}, registry.Metadata{}, registry.Metadata{})
	members := make([]hash.Member, len(r.Srv))
	for i, s := range r.Srv {
		members[i] = hash.Member{Name: s.Addr, Weight: registry.DefaultWeight}
	}
	slices.SortFunc(members, func(a, b hash.Member) int { return strings.Compare(a.Name, b.Name) })
	table := hash.Table(members, hash.TableSize(len(members)))
	conn := r.Dial(hash.Name, nil) // no waiting for connections
	got := route(t, r, conn, 2000, hash.WithKey)
	for k, i := range got {
		owner := members[table[hash.Sum(fmt.Sprintf("user-%d", k))%uint64(len(table))]].Name
		if r.Srv[i].Addr != owner {
			t.Fatalf("key user-%d reached %s, owner %s", k, r.Srv[i].Addr, owner)
		}
	}
}

// A call that avoids every instance still gets one, at once: each owner
// is asked once, then the frame takes the owner.
func TestAvoidingEveryInstance(t *testing.T) {
	r := lbtest.New(t, registry.Metadata{}, registry.Metadata{})
	conn := r.Dial(hash.Name, nil)
	r.WaitAll(conn, 0, 1)
	ctx := lb.Avoid(hash.WithKey(context.Background(), "user-1"), r.Srv[0].Addr, r.Srv[1].Addr)
	first, err := r.Call(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	owner, err := r.Call(hash.WithKey(context.Background(), "user-1"), conn)
	if err != nil {
		t.Fatal(err)
	}
	if first != owner {
		t.Errorf("avoiding all: instance %d, the key's owner is %d", first, owner)
	}
}
