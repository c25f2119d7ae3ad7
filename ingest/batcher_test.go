package ingest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

// recorder is an Ingester that records commits and can be held shut. The
// batcher's queueing is pure logic; the store behind it is tested for real
// in redisstore and end to end in cmd/fleetd.
type recorder struct {
	mu      sync.Mutex
	commits [][]fleet.Event
	gate    chan struct{}
	entered atomic.Int32 // Apply calls begun
}

func (r *recorder) Apply(ctx context.Context, events []fleet.Event, results []fleet.Result) error {
	r.entered.Add(1)
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	r.commits = append(r.commits, append([]fleet.Event(nil), events...))
	r.mu.Unlock()
	for i, e := range events {
		results[i] = fleet.Result(e.TS % 3) // a result that depends on the event
	}
	return nil
}

func evs(n int, base int64) []fleet.Event {
	out := make([]fleet.Event, n)
	for i := range out {
		out[i] = fleet.Event{Type: fleet.EventOnlineChanged, DeviceID: "d", TS: base + int64(i)}
	}
	return out
}

func TestBatcherRoutesResultsToTheirRequests(t *testing.T) {
	rec := &recorder{}
	b := NewBatcher(rec, Config{Workers: 2, MaxBatch: 50})
	defer b.Close()
	var wg sync.WaitGroup
	for r := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			events := evs(1+r%7, int64(r*100))
			res := make([]fleet.Result, len(events))
			if err := b.Submit(context.Background(), events, res); err != nil {
				t.Error(err)
				return
			}
			for i, e := range events {
				if res[i] != fleet.Result(e.TS%3) {
					t.Errorf("request %d event %d: result %v, want %v", r, i, res[i], fleet.Result(e.TS%3))
				}
			}
		}()
	}
	wg.Wait()
}

func TestBatcherQueueFull(t *testing.T) {
	rec := &recorder{gate: make(chan struct{})}
	b := NewBatcher(rec, Config{Workers: 1, QueueEvents: 10, MaxBatch: 5, CommitTimeout: 5 * time.Second})
	errs := make(chan error, 3)
	submit := func() {
		go func() { errs <- b.Submit(context.Background(), evs(5, 0), make([]fleet.Result, 5)) }()
	}
	submit() // taken by the worker, which blocks on the gate
	for rec.entered.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	submit() // 5+5 fill the queue
	submit()
	for b.queued.Load() < 10 {
		time.Sleep(time.Millisecond)
	}
	err := b.Submit(context.Background(), evs(5, 0), make([]fleet.Result, 5))
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("err = %v, want ErrQueueFull", err)
	}
	close(rec.gate)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("queued request: %v", err)
		}
	}
	b.Close()
}

func TestBatcherTimeout(t *testing.T) {
	rec := &recorder{gate: make(chan struct{})}
	b := NewBatcher(rec, Config{Workers: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.Submit(ctx, evs(1, 0), make([]fleet.Result, 1)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	close(rec.gate)
	b.Close()
}

func TestBatcherCloseFlushesQueue(t *testing.T) {
	rec := &recorder{gate: make(chan struct{})}
	b := NewBatcher(rec, Config{Workers: 1, CommitTimeout: 5 * time.Second})
	errs := make(chan error, 5)
	submit := func(i int) {
		go func() { errs <- b.Submit(context.Background(), evs(2, int64(i)), make([]fleet.Result, 2)) }()
	}
	// The first job goes to the worker, which blocks on the gate; only then
	// are the other four queued, so they are certainly waiting at Close.
	submit(0)
	for rec.entered.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	for i := 1; i < 5; i++ {
		submit(i)
	}
	for b.queued.Load() < 8 || len(b.queue) < 4 {
		time.Sleep(time.Millisecond)
	}
	go func() { time.Sleep(20 * time.Millisecond); close(rec.gate) }()
	b.Close()
	for range 5 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for _, c := range rec.commits {
		total += len(c)
	}
	if total != 10 {
		t.Fatalf("committed %d events, want 10", total)
	}
	if err := b.Submit(context.Background(), evs(1, 0), make([]fleet.Result, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}
