package ingest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

// Errors of Submit. Both are *fleet.Error so the HTTP layer maps them.
var (
	// ErrQueueFull means the bounded queue has no room: answer 429.
	ErrQueueFull = &fleet.Error{Code: fleet.EOVERLOADED, Message: "ingest queue is full, retry later"}
	// ErrClosed means the batcher is shutting down: answer 503.
	ErrClosed = &fleet.Error{Code: fleet.EUNAVAILABLE, Message: "fleetd is shutting down, retry later"}
	// ErrTimeout means the events were not committed in time: answer 503.
	// They may or may not have been applied; redelivery is safe.
	ErrTimeout = &fleet.Error{Code: fleet.EUNAVAILABLE, Message: "the state store did not commit the events in time, retry later"}
)

// Config sizes the batcher.
type Config struct {
	// QueueEvents bounds the events waiting for a commit; beyond it Submit
	// fails fast with ErrQueueFull.
	QueueEvents int
	// MaxBatch caps the events of one group commit.
	MaxBatch int
	// Workers is the number of commits in flight at once.
	Workers int
	// CommitTimeout bounds one group commit.
	CommitTimeout time.Duration
	// Observe, if set, is told the size of every commit.
	Observe func(events int)
	// ObserveCommit, if set, is told how long every commit to the store
	// took and how it ended (nil, or its error).
	ObserveCommit func(events int, d time.Duration, err error)
}

// job is one request's events waiting for their commit.
type job struct {
	events  []fleet.Event
	results []fleet.Result
	err     error
	done    chan struct{}
}

// Batcher is a group-commit queue in front of a fleet.Ingester. A worker
// takes whatever is queued (up to MaxBatch events) and commits it at once,
// so it flushes as soon as the queue drains rather than after a fixed
// linger: under load batches grow by themselves, at low rate latency stays
// one round trip. Safe for concurrent use.
type Batcher struct {
	ing    fleet.Ingester
	cfg    Config
	queue  chan *job
	queued atomic.Int64 // events in queue
	mu     sync.RWMutex // held for reading while sending on queue
	closed bool
	wg     sync.WaitGroup
}

// NewBatcher starts the workers.
func NewBatcher(ing fleet.Ingester, cfg Config) *Batcher {
	if cfg.QueueEvents <= 0 {
		cfg.QueueEvents = 100000
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 2000
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.CommitTimeout <= 0 {
		cfg.CommitTimeout = time.Second
	}
	b := &Batcher{ing: ing, cfg: cfg, queue: make(chan *job, cfg.QueueEvents)}
	b.wg.Add(cfg.Workers)
	for range cfg.Workers {
		go b.worker()
	}
	return b
}

// Submit queues events and waits until they are committed, ctx is done, or
// the batcher closes. results[i] receives the outcome of events[i]. The
// events must stay unchanged until Submit returns.
//
// Errors: ErrQueueFull (no room, nothing queued), ErrClosed, ErrTimeout (ctx
// done first), or the store's error (EUNAVAILABLE when it cannot be
// reached). Only a nil error means every event is acknowledged.
func (b *Batcher) Submit(ctx context.Context, events []fleet.Event, results []fleet.Result) error {
	if len(events) == 0 {
		return nil
	}
	n := int64(len(events))
	if b.queued.Add(n) > int64(b.cfg.QueueEvents) {
		b.queued.Add(-n)
		return ErrQueueFull
	}
	j := &job{events: events, results: results, done: make(chan struct{})}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		b.queued.Add(-n)
		return ErrClosed
	}
	select {
	case b.queue <- j:
	default: // cannot happen: the channel holds QueueEvents jobs
		b.mu.RUnlock()
		b.queued.Add(-n)
		return ErrQueueFull
	}
	b.mu.RUnlock()
	select {
	case <-j.done:
		return j.err
	case <-ctx.Done():
		return ErrTimeout
	}
}

// Queued returns the number of events waiting for a commit.
func (b *Batcher) Queued() int { return int(b.queued.Load()) }

// Close stops taking events, commits everything queued, and returns when
// the workers are done.
func (b *Batcher) Close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.queue)
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *Batcher) worker() {
	defer b.wg.Done()
	var (
		jobs    []*job
		events  []fleet.Event
		results []fleet.Result
	)
	for j := range b.queue {
		jobs = append(jobs[:0], j)
		total := len(j.events)
	drain:
		for total < b.cfg.MaxBatch {
			select {
			case j, ok := <-b.queue:
				if !ok {
					break drain
				}
				jobs = append(jobs, j)
				total += len(j.events)
			default:
				break drain
			}
		}
		b.commit(jobs, total, &events, &results)
	}
}

// commit applies the events of jobs in one call to the store, in arrival
// order, and hands each job its results.
func (b *Batcher) commit(jobs []*job, total int, events *[]fleet.Event, results *[]fleet.Result) {
	b.queued.Add(-int64(total))
	if b.cfg.Observe != nil {
		b.cfg.Observe(total)
	}
	var err error
	if len(jobs) == 1 {
		err = b.apply(jobs[0].events, jobs[0].results)
	} else {
		ev := (*events)[:0]
		for _, j := range jobs {
			ev = append(ev, j.events...)
		}
		*events = ev
		if cap(*results) < total {
			*results = make([]fleet.Result, total)
		}
		res := (*results)[:total]
		err = b.apply(ev, res)
		off := 0
		for _, j := range jobs {
			copy(j.results, res[off:off+len(j.events)])
			off += len(j.events)
		}
		clear(ev) // drop references to request bodies
		if err != nil && isolable(err) {
			// One request's events may have failed the commit: commit each
			// request alone, so the error stays with the one that caused
			// it. Events already applied are applied again, harmlessly:
			// every event is idempotent.
			for _, j := range jobs {
				j.err = b.apply(j.events, j.results)
				close(j.done)
			}
			return
		}
	}
	for _, j := range jobs {
		j.err = err
		close(j.done)
	}
}

// isolable reports whether a group commit's error may belong to one of its
// requests rather than to the store (an outage or a timeout fails them all
// alike, and retrying each would only add load).
func isolable(err error) bool {
	switch fleet.ErrorCode(err) {
	case fleet.EUNAVAILABLE, fleet.EOVERLOADED:
		return false
	}
	return !errors.Is(err, context.DeadlineExceeded)
}

func (b *Batcher) apply(events []fleet.Event, results []fleet.Result) error {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.CommitTimeout)
	defer cancel()
	start := time.Now()
	err := b.ing.Apply(ctx, events, results)
	if b.cfg.ObserveCommit != nil {
		b.cfg.ObserveCommit(len(events), time.Since(start), err)
	}
	if err != nil && errors.Is(err, context.DeadlineExceeded) && fleet.ErrorCode(err) == fleet.EINTERNAL {
		return ErrTimeout
	}
	return err
}
