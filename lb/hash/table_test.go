package hash

import (
	"fmt"
	"testing"
)

func members(n int) []Member {
	out := make([]Member, n)
	for i := range out {
		out[i] = Member{Name: fmt.Sprintf("127.0.0.1:%d", 20000+i), Weight: 100}
	}
	return out
}

// owners returns the owner's name of each of n keys.
func owners(ms []Member, n int) []string {
	t := Table(ms, TableSize(len(ms)))
	out := make([]string, n)
	for k := range out {
		out[k] = ms[t[Sum(fmt.Sprintf("user-%d", k))%uint64(len(t))]].Name
	}
	return out
}

func TestTableBalance(t *testing.T) {
	ms := members(100)
	load := map[string]int{}
	for _, o := range owners(ms, 100000) {
		load[o]++
	}
	hi := 0
	for _, m := range ms {
		hi = max(hi, load[m.Name])
	}
	ratio := float64(hi) / (100000.0 / 100)
	t.Logf("100 instances, 100,000 keys: max/mean %.3f", ratio)
	if ratio > 1.10 {
		t.Errorf("max/mean load %.3f, want ≤ 1.10", ratio)
	}
	// Slots themselves are within one of equal.
	tab := Table(ms, TableSize(100))
	slots := make([]int, 100)
	for _, i := range tab {
		slots[i]++
	}
	lo, up := slots[0], slots[0]
	for _, s := range slots {
		lo, up = min(lo, s), max(up, s)
	}
	if up-lo > 1 {
		t.Errorf("slots per member range %d..%d, want within one", lo, up)
	}
}

func TestTableMovesAboutOneNth(t *testing.T) {
	for _, n := range []int{4, 10, 50} {
		before := owners(members(n), 10000)
		after := owners(members(n+1), 10000)
		moved, toNew := 0, 0
		for k := range before {
			if before[k] != after[k] {
				moved++
				if after[k] == members(n + 1)[n].Name {
					toNew++
				}
			}
		}
		frac := float64(moved) / 10000
		t.Logf("%d → %d instances: %.1f%% of keys moved (%.1f%% ideal), %d of them to the new one", n, n+1, 100*frac, 100/float64(n+1), toNew)
		ideal := 1 / float64(n+1)
		if frac < ideal*0.75 || frac > ideal*1.25 {
			t.Errorf("%d → %d: %.3f of keys moved, want %.3f ± 25%%", n, n+1, frac, ideal)
		}
		// Maglev moves a few keys between old instances too.
		if float64(toNew) < 0.8*float64(moved) {
			t.Errorf("%d → %d: only %d of %d moved keys went to the new instance", n, n+1, toNew, moved)
		}
	}
}

func TestTableFollowsWeights(t *testing.T) {
	ms := []Member{{"a", 100}, {"b", 200}, {"c", 300}}
	tab := Table(ms, 65537)
	slots := make([]int, 3)
	for _, i := range tab {
		slots[i]++
	}
	for i, m := range ms {
		want := 65537 * float64(m.Weight) / 600
		if d := float64(slots[i]) - want; d > 3 || d < -3 {
			t.Errorf("%s (weight %d): %d slots, want %.0f", m.Name, m.Weight, slots[i], want)
		}
	}
}

// Sum is part of the contract between processes: a change would move
// every key. These values must never change.
func TestSumFixed(t *testing.T) {
	for k, want := range map[string]uint64{"": 0xf52a15e9a9b5e89b, "user-42": 0x7a1596f0e94b5793} {
		if got := Sum(k); got != want {
			t.Errorf("Sum(%q) = %#x, want %#x", k, got, want)
		}
	}
}
