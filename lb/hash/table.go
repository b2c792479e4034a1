package hash

// Member is one instance as the lookup table sees it.
type Member struct {
	Name   string // the instance's address
	Weight int    // positive
}

// Table returns a Maglev lookup table of size slots (a prime larger than
// len(members)): slot i belongs to members[t[i]]. Each member owns a share
// of the slots proportional to its weight, to within one slot. The table
// depends only on the members' names, weights and order, so every client
// computes the same owner for each key as long as they list the members in the same
// order (the balancer sorts them by name). A key's slot is
// Sum(key) % size.
func Table(members []Member, size int) []int32 {
	t := make([]int32, size)
	if len(members) == 0 {
		return t
	}
	for i := range t {
		t[i] = -1
	}
	n := len(members)
	offset, skip, next := make([]uint64, n), make([]uint64, n), make([]uint64, n)
	credit := make([]float64, n)
	maxW := 1
	for i, m := range members {
		offset[i] = Sum("offset\x00"+m.Name) % uint64(size)
		skip[i] = Sum("skip\x00"+m.Name)%uint64(size-1) + 1
		maxW = max(maxW, m.Weight)
	}
	filled := 0
	for filled < size {
		for i, m := range members {
			// Weighted turns: each round a member earns weight/maxWeight of
			// a turn and takes whole turns as they accrue.
			credit[i] += float64(max(m.Weight, 1)) / float64(maxW)
			for credit[i] >= 1 && filled < size {
				credit[i]--
				// The member's next preferred slot that is still free.
				for {
					c := (offset[i] + next[i]*skip[i]) % uint64(size)
					next[i]++
					if t[c] < 0 {
						t[c] = int32(i)
						filled++
						break
					}
				}
			}
		}
	}
	return t
}

// Sum is the 64-bit hash of keys and names: FNV-1a followed by a
// splitmix64 finaliser, so that close keys ("user-1", "user-2") land far
// apart. It is fixed: clients in other processes and versions agree.
func Sum(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
