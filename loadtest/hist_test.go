package loadtest

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestBucketsCoverEveryValueContiguously(t *testing.T) {
	prevHi := uint64(0)
	for i := range histBuckets {
		lo, hi := bucketRange(i)
		if lo != prevHi {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if w := hi - lo; lo >= 2*histSubCount && float64(w)/float64(lo) > 1.0/histSubCount+1e-12 {
			t.Fatalf("bucket %d [%d,%d) is %.3f%% wide", i, lo, hi, 100*float64(w)/float64(lo))
		}
		for _, v := range []uint64{lo, hi - 1, lo + (hi-lo)/2} {
			if got := bucketOf(v); got != i {
				t.Fatalf("bucketOf(%d) = %d, want %d", v, got, i)
			}
		}
		prevHi = hi
	}
	if prevHi != histMaxMicros+1 {
		t.Fatalf("buckets end at %d, want %d", prevHi, histMaxMicros+1)
	}
	if bucketOf(1<<40) != histBuckets-1 {
		t.Fatalf("huge values must land in the last bucket")
	}
}

func exactQuantile(sorted []uint64, q float64) uint64 {
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

func TestQuantileAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dists := map[string]func() uint64{
		"lognormal ~1ms": func() uint64 { return uint64(math.Exp(math.Log(1000) + 1.2*rng.NormFloat64())) },
		"uniform 0-60s":  func() uint64 { return rng.Uint64N(60_000_000) },
		"tiny":           func() uint64 { return rng.Uint64N(300) },
		"bimodal":        func() uint64 { return []uint64{200, 150_000}[rng.IntN(2)] + rng.Uint64N(50) },
	}
	for name, draw := range dists {
		t.Run(name, func(t *testing.T) {
			var h Histogram
			vals := make([]uint64, 200_000)
			for i := range vals {
				vals[i] = draw()
				h.Record(time.Duration(vals[i]) * time.Microsecond)
			}
			sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
			for _, q := range []float64{0.001, 0.5, 0.9, 0.99, 0.999, 0.9999, 1} {
				want := float64(exactQuantile(vals, q))
				got := float64(h.Quantile(q) / time.Microsecond)
				if math.Abs(got-want) > want*0.01+1 {
					t.Errorf("q%v = %vµs, exact %vµs (error %.2f%%)", q, got, want, 100*math.Abs(got-want)/want)
				}
			}
			if h.Count() != uint64(len(vals)) || h.Min() != time.Duration(vals[0])*time.Microsecond || h.Max() != time.Duration(vals[len(vals)-1])*time.Microsecond {
				t.Errorf("count/min/max = %d/%v/%v", h.Count(), h.Min(), h.Max())
			}
		})
	}
}

func TestHistogramMergeResetEmpty(t *testing.T) {
	var a, b, both Histogram
	if a.Quantile(0.99) != 0 || a.Mean() != 0 {
		t.Fatal("empty histogram must report zeros")
	}
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * time.Millisecond
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
		both.Record(d)
	}
	a.Merge(&b)
	if a != both {
		t.Fatal("merge differs from recording everything in one histogram")
	}
	if got := a.Mean(); got != 500500*time.Microsecond {
		t.Errorf("mean = %v", got)
	}
	a.Reset()
	if a.Count() != 0 || a.Max() != 0 {
		t.Error("reset kept observations")
	}
	var neg Histogram
	neg.Record(-time.Second)
	if neg.Max() != 0 || neg.Count() != 1 {
		t.Error("negative durations count as zero")
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Record(time.Duration(i%5_000_000) * time.Microsecond)
	}
}
