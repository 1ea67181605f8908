package metrics

import (
	"sync/atomic"
	"time"
)

// routeBuckets are the upper bounds of the routing latency histogram. Local routing takes
// microseconds; the upper buckets catch hooks that wait on storage.
var routeBuckets = []time.Duration{
	10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond, 100 * time.Microsecond,
	250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond,
	5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, time.Second,
}

// Histogram counts durations in fixed buckets. Each observation is a short scan and three
// atomic adds; buckets are stored non-cumulatively and summed when exposed.
type Histogram struct {
	bounds []time.Duration
	counts []atomic.Uint64 // one per bound, plus +Inf
	sum    atomic.Int64    // nanoseconds
	count  atomic.Uint64
}

func newHistogram(bounds []time.Duration) Histogram {
	return Histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	i := 0
	for i < len(h.bounds) && d > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
	h.count.Add(1)
}
