package wrr

import (
	"testing"

	"google.golang.org/grpc/balancer"
)

// idPicker stands for a ready instance; Pick reports which one it is.
type idPicker int

func (p idPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{Metadata: nil, Done: nil}, pickedErr(p)
}

type pickedErr int

func (pickedErr) Error() string { return "picked" }

// TestScheduleIsSmooth: after every pick, each instance has had its share
// of the picks so far give or take one: turns interleave instead of coming
// in bursts (weights 4:4 give ABABABAB, never AAAABBBB).
func TestScheduleIsSmooth(t *testing.T) {
	for _, weights := range [][]float64{{1, 1, 1}, {4, 4}, {5, 1}, {10, 20, 70}, {3, 7, 1, 9}} {
		var ready []entry
		total := 0
		for i, w := range weights {
			ready = append(ready, entry{picker: idPicker(i), weight: w})
			total += int(w)
		}
		p := newPicker(ready)
		var seq []int
		for range 20 * total {
			_, err := p.Pick(balancer.PickInfo{})
			seq = append(seq, int(err.(pickedErr)))
		}
		// After every pick, each instance's count is within one of its
		// share of the picks so far.
		counts := make([]int, len(weights))
		for n, id := range seq {
			counts[id]++
			for i, w := range weights {
				want := float64(n+1) * w / float64(total)
				if d := float64(counts[i]) - want; d < -1.0001 || d > 1.0001 {
					t.Fatalf("weights %v: after %d picks counts %v, instance %d wants %.2f", weights, n+1, counts, i, want)
				}
			}
		}
	}
}
