package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/redistest"
	"github.com/fleetd/fleetd/redisstore"
)

// groups passes commits through to the real store and remembers the size
// of every commit that held an event of device bad.
type groups struct {
	fleet.Ingester
	bad   string
	mu    sync.Mutex
	sizes []int
}

func (g *groups) Apply(ctx context.Context, events []fleet.Event, results []fleet.Result) error {
	for _, e := range events {
		if e.DeviceID == g.bad {
			g.mu.Lock()
			g.sizes = append(g.sizes, len(events))
			g.mu.Unlock()
			break
		}
	}
	return g.Ingester.Apply(ctx, events, results)
}

// An event that passes decoding but that the store refuses fails its own
// request, with nothing of it applied, and none of the requests that shared
// its group commit (SPEC §3, Failure isolation).
func TestRefusedEventFailsOnlyItsRequest(t *testing.T) {
	srv := redistest.Start(t)
	store, err := redisstore.Open(context.Background(), redisstore.Config{URL: srv.URL, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	store.SetRefuseHook(func(e *fleet.Event) error {
		if e.DeviceID == "bad-d" && e.Type == fleet.EventOnlineChanged {
			return errors.New("refused by the test")
		}
		return nil
	})
	g := &groups{Ingester: store, bad: "bad-d"}
	b := NewBatcher(g, Config{Workers: 1, MaxBatch: 1000})
	defer b.Close()

	now := time.Now().UnixMilli()
	submit := func(dev, ws string) error {
		events := []fleet.Event{
			{Type: fleet.EventDeviceRegistered, DeviceID: dev, WorkspaceID: ws, Name: "n", OS: "Linux", TS: now, DurationSec: -1},
			{Type: fleet.EventOnlineChanged, DeviceID: dev, Online: true, TS: now + 1, DurationSec: -1},
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return b.Submit(ctx, events, make([]fleet.Result, len(events)))
	}
	// Rounds of 40 valid requests around the refused one, until the refused
	// one has shared a group commit with others (one worker makes it likely
	// from the first round).
	var failed []error
	for round := 0; round < 20; round++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var badErr error
		for i := range 41 {
			wg.Go(func() {
				if i == 20 {
					badErr = submit("bad-d", "bad-w")
					return
				}
				if err := submit(fmt.Sprintf("ok-%d-%d", round, i), "ok-w"); err != nil {
					mu.Lock()
					failed = append(failed, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if fleet.ErrorCode(badErr) != fleet.EINVALID || !strings.Contains(fleet.ErrorMessage(badErr), "refused by the test") {
			t.Fatalf("refused request: %v, want invalid with the reason", badErr)
		}
		g.mu.Lock()
		shared := false
		for _, n := range g.sizes {
			shared = shared || n > 2
		}
		g.mu.Unlock()
		if shared {
			break
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d valid requests failed beside the refused one, the first: %v", len(failed), failed[0])
	}
	g.mu.Lock()
	sizes := g.sizes
	g.mu.Unlock()
	shared := false
	for _, n := range sizes {
		shared = shared || n > 2
	}
	if !shared {
		t.Fatalf("the refused request never shared a group commit (commit sizes %v): the test proved nothing", sizes)
	}
	// Nothing of the refused request is in Redis.
	for _, pattern := range []string{"*bad-w*", "*bad-d*"} {
		if keys, err := srv.Do("KEYS", pattern); err != nil || keys != "" {
			t.Fatalf("keys %s: %q %v, want none", pattern, keys, err)
		}
	}
	if n, err := srv.Do("ZCOUNT", "fl:workspaces", "-inf", "+inf"); err != nil || n != "1" {
		t.Fatalf("known workspaces: %q %v, want 1 (ok-w; bad-w was refused)", n, err)
	}
	if d, err := store.Device(context.Background(), "bad-w", "bad-d"); fleet.ErrorCode(err) != fleet.ENOTFOUND {
		t.Fatalf("refused device: %+v %v", d, err)
	}
	// The valid ones are all there.
	p, err := store.ListDevices(context.Background(), "ok-w", fleet.DeviceFilter{}, "", 500)
	if err != nil || len(p.Items) == 0 {
		t.Fatalf("valid devices: %d %v", len(p.Items), err)
	}
	for _, d := range p.Items {
		if !d.Online {
			t.Fatalf("valid device %s not online", d.ID)
		}
	}
}
