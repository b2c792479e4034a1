package breaker

import (
	"sync"
	"time"
)

// window counts calls, failures and slow calls over a rolling window of
// buckets.
type window struct {
	mu      sync.Mutex
	now     func() time.Time
	period  time.Duration
	buckets []bucket
	head    int       // the current bucket
	start   time.Time // when the current bucket began
}

type bucket struct{ calls, failed, slow int }

func (w *window) init(span time.Duration, n int, now func() time.Time) {
	w.now, w.period, w.buckets = now, span/time.Duration(n), make([]bucket, n)
	w.start = now()
}

// advance moves the head to the bucket of now, clearing the ones passed.
func (w *window) advance() {
	now := w.now()
	steps := int(now.Sub(w.start) / w.period)
	if steps <= 0 {
		return
	}
	if steps > len(w.buckets) {
		steps = len(w.buckets)
	}
	for range steps {
		w.head = (w.head + 1) % len(w.buckets)
		w.buckets[w.head] = bucket{}
	}
	w.start = now.Add(-now.Sub(w.start) % w.period)
}

func (w *window) add(failed, slow bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.advance()
	b := &w.buckets[w.head]
	b.calls++
	if failed {
		b.failed++
	}
	if slow {
		b.slow++
	}
}

func (w *window) sums() (calls, failed, slow int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.advance()
	for _, b := range w.buckets {
		calls, failed, slow = calls+b.calls, failed+b.failed, slow+b.slow
	}
	return
}

func (w *window) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.buckets)
	w.start = w.now()
}
