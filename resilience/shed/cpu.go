package shed

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// sampler reads CPU use every 250ms and keeps a smoothed value.
type sampler struct {
	read func() (busy, capacity float64, err error) // cumulative seconds
	last struct{ busy, capacity float64 }
	val  atomic.Uint64 // float64 bits, 0..1
}

func newSampler() (*sampler, error) {
	s := &sampler{}
	for _, r := range []func() (float64, float64, error){readCgroup, readProcStat} {
		if busy, capacity, err := r(); err == nil {
			s.read = r
			s.last.busy, s.last.capacity = busy, capacity
			return s, nil
		}
	}
	return nil, fmt.Errorf("shed: cannot read CPU use from /sys/fs/cgroup/cpu.stat or /proc/stat: pass Config.CPU")
}

func (s *sampler) load() float64 { return math.Float64frombits(s.val.Load()) }

func (s *sampler) run(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		busy, capacity, err := s.read()
		if err != nil {
			continue
		}
		if d := capacity - s.last.capacity; d > 0 {
			u := math.Min(1, math.Max(0, (busy-s.last.busy)/d))
			// Smoothed: a one-sample spike does not start shedding.
			s.val.Store(math.Float64bits(0.8*s.load() + 0.2*u))
		}
		s.last.busy, s.last.capacity = busy, capacity
	}
}

var processStart = time.Now()

// readCgroup reads cgroup v2: CPU seconds used by the cgroup, and CPU
// seconds it may have used since the process started (wall time × its
// quota in cores).
func readCgroup() (busy, capacity float64, err error) {
	stat, err := os.ReadFile("/sys/fs/cgroup/cpu.stat")
	if err != nil {
		return 0, 0, err
	}
	var usec float64 = -1
	sc := bufio.NewScanner(bytes.NewReader(stat))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "usage_usec" {
			usec, err = strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, 0, err
			}
		}
	}
	if usec < 0 {
		return 0, 0, fmt.Errorf("no usage_usec in cpu.stat")
	}
	cores := float64(runtime.NumCPU())
	if max, err := os.ReadFile("/sys/fs/cgroup/cpu.max"); err == nil {
		if f := strings.Fields(string(max)); len(f) == 2 && f[0] != "max" {
			q, err1 := strconv.ParseFloat(f[0], 64)
			p, err2 := strconv.ParseFloat(f[1], 64)
			if err1 == nil && err2 == nil && p > 0 {
				cores = math.Min(cores, q/p)
			}
		}
	}
	return usec / 1e6, time.Since(processStart).Seconds() * cores, nil
}

// readProcStat reads the machine's busy and total CPU time from
// /proc/stat (in clock ticks; only differences matter).
func readProcStat() (busy, capacity float64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("unexpected /proc/stat: %q", line)
	}
	var total, idle float64
	for i, v := range f[1:] {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, 0, err
		}
		total += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	return total - idle, total, nil
}
