package loadtest

import (
	"math"
	"math/bits"
	"time"
)

// The histogram is log-linear like HdrHistogram: values below 2^(subBits+1)
// microseconds get one bucket each, and every further power of two is split
// into 2^subBits equal buckets. A bucket is then at most 1/2^subBits = 0.78 %
// of its lower bound wide, and reporting its midpoint keeps the error of any
// percentile within ±0.4 % (or ±0.5 µs for the exact small buckets).
const (
	histSubBits  = 7
	histSubCount = 1 << histSubBits
	// histMaxMicros is the largest value the buckets resolve (~67 s). Larger
	// values land in the last bucket; the exact maximum is kept separately.
	histMaxMicros = 1<<26 - 1
	// histBuckets is bucketOf(histMaxMicros)+1: (26-(subBits+1)+1) powers of
	// two above the linear range, subCount buckets each, plus the linear range.
	histBuckets = (26-(histSubBits+1)+1)*histSubCount + histSubCount
)

// Histogram records latencies with bounded relative error, microseconds to
// about a minute, in constant memory. The zero value is ready to use. It is
// not safe for concurrent use: each sender owns one and they are merged.
type Histogram struct {
	counts [histBuckets]uint64
	total  uint64
	sum    uint64 // microseconds
	min    uint64
	max    uint64
}

// bucketOf maps a value in microseconds to its bucket index.
func bucketOf(v uint64) int {
	if v > histMaxMicros {
		v = histMaxMicros
	}
	if v < 2*histSubCount {
		return int(v)
	}
	shift := bits.Len64(v) - (histSubBits + 1)
	return (shift+1)<<histSubBits + int(v>>uint(shift)) - histSubCount
}

// bucketRange returns the half-open range [lo, hi) of values in bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < 2*histSubCount {
		return uint64(i), uint64(i) + 1
	}
	shift := uint(i>>histSubBits) - 1
	sub := uint64(i&(histSubCount-1)) + histSubCount
	lo = sub << shift
	return lo, lo + 1<<shift
}

// Record adds one observation. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d / time.Microsecond)
	}
	h.counts[bucketOf(v)]++
	if h.total == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.total++
	h.sum += v
}

// Merge adds every observation of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.total == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.total += o.total
	h.sum += o.sum
}

// Reset forgets every observation.
func (h *Histogram) Reset() { *h = Histogram{} }

// Count returns the number of observations.
func (h *Histogram) Count() uint64 { return h.total }

// Max returns the largest observation (exact, not bucketed).
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) * time.Microsecond }

// Min returns the smallest observation (exact, not bucketed).
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) * time.Microsecond }

// Mean returns the arithmetic mean of the observations (exact).
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(float64(h.sum)/float64(h.total)*1000) * time.Nanosecond
}

// Quantile returns the value below or at which a share q (0..1) of the
// observations lie: the midpoint of the bucket holding the observation of
// rank ceil(q·count), clamped to the exact min and max. It returns 0 for an
// empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	if q >= 1 {
		return h.Max()
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen < rank {
			continue
		}
		lo, hi := bucketRange(i)
		v := lo + (hi-lo)/2
		v = max(v, h.min)
		v = min(v, h.max)
		return time.Duration(v) * time.Microsecond
	}
	return h.Max()
}
