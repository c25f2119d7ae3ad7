package api

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/valyala/fasthttp"
)

// gatedReader answers Usage with the number of calls so far, each call
// waiting for a token on gate.
type gatedReader struct {
	fleet.Reader
	calls atomic.Int64
	gate  chan struct{}
	panic bool
}

func (g *gatedReader) Usage(_ context.Context, _ string, from, to time.Time) (fleet.Usage, error) {
	n := g.calls.Add(1)
	<-g.gate
	if g.panic {
		panic("store blew up")
	}
	return fleet.Usage{From: from, To: to, Devices: n}, nil
}

// queued reports whether the usage read of s has a running call and a
// next call with want requests besides its leader.
func queued(s *Server, want int32) bool {
	s.reads.mu.Lock()
	defer s.reads.mu.Unlock()
	for _, sl := range s.reads.slots {
		if sl.running != nil && sl.next != nil && sl.next.joined == want {
			return true
		}
	}
	return false
}

// TestReadCoalescing: requests that arrive while a read is running are
// answered by one next read, never by the running one (which may predate
// them).
func TestReadCoalescing(t *testing.T) {
	r := &gatedReader{gate: make(chan struct{})}
	keys := &fakeKeys{get: func([]byte) (fleet.APIKey, error) { return fleet.APIKey{ID: "k", Workspace: "acme"}, nil }}
	s := MustNew(t, Config{Reader: r, Keys: keys, Now: func() time.Time { return t0 }})
	key := "sk_live_" + strings.Repeat("A", 40)
	h := s.Handler()
	get := func() (int64, int) {
		var ctx fasthttp.RequestCtx
		ctx.Request.SetRequestURI("/api/v1/usage")
		ctx.Request.Header.Set("x-api-key", key)
		h(&ctx)
		var u struct{ Devices int64 }
		json.Unmarshal(ctx.Response.Body(), &u)
		return u.Devices, ctx.Response.StatusCode()
	}

	results := make([]int64, 6)
	var wg sync.WaitGroup
	wg.Go(func() { results[0], _ = get() })
	waitFor(t, func() bool { return r.calls.Load() == 1 })
	for i := 1; i < 6; i++ {
		wg.Go(func() { results[i], _ = get() })
	}
	waitFor(t, func() bool { return queued(s, 4) })
	r.gate <- struct{}{} // the first call ends
	r.gate <- struct{}{} // the second, for the five that queued
	wg.Wait()
	if r.calls.Load() != 2 {
		t.Fatalf("%d store calls, want 2", r.calls.Load())
	}
	if results[0] != 1 {
		t.Errorf("first request got call %d", results[0])
	}
	for i := 1; i < 6; i++ {
		if results[i] != 2 {
			t.Errorf("request %d, which arrived during call 1, got call %d", i, results[i])
		}
	}

	t.Run("a panicking read answers its waiters", func(t *testing.T) {
		r.panic = true
		defer func() { r.panic = false }()
		calls := r.calls.Load()
		statuses := make([]int, 3)
		var wg sync.WaitGroup
		// The leader's panic reaches the router's PanicHandler (500).
		wg.Go(func() { _, statuses[0] = get() })
		waitFor(t, func() bool { return r.calls.Load() == calls+1 })
		for i := 1; i < 3; i++ {
			wg.Go(func() { _, statuses[i] = get() })
		}
		waitFor(t, func() bool { return queued(s, 1) })
		r.gate <- struct{}{}
		r.gate <- struct{}{}
		wg.Wait()
		for i, st := range statuses {
			if st != 500 {
				t.Errorf("request %d: %d", i, st)
			}
		}
		s.reads.mu.Lock()
		defer s.reads.mu.Unlock()
		if len(s.reads.slots) != 0 {
			t.Error("slot left behind")
		}
	})
}

func waitFor(tb testing.TB, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
