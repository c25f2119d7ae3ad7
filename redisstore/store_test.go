package redisstore

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// t0 is a fixed "now" for tests: 2026-06-28T07:30:00Z.
var t0 = time.Date(2026, 6, 28, 7, 30, 0, 0, time.UTC)

func ms(t time.Time) int64 { return t.UnixMilli() }

// backend is where a test's store lives: one redis-server, or a Redis
// Cluster when FLEETD_TEST_BACKEND=cluster (make test runs both).
type backend struct {
	cfg Config
	srv *redistest.Server // nil on a cluster
}

func newBackend(tb testing.TB) backend {
	tb.Helper()
	cfg := Config{Timeout: 2 * time.Second, Retention: 10 * 365 * 24 * time.Hour}
	switch os.Getenv("FLEETD_TEST_BACKEND") {
	case "cluster":
		cfg.Cluster = redistest.StartCluster(tb).Addrs()
		return backend{cfg: cfg}
	case "", "single":
		srv := redistest.Start(tb)
		cfg.URL = srv.URL
		return backend{cfg: cfg, srv: srv}
	default:
		tb.Fatalf("FLEETD_TEST_BACKEND must be single or cluster")
		return backend{}
	}
}

func (b backend) open(tb testing.TB) *Store {
	tb.Helper()
	s, err := Open(context.Background(), b.cfg)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	s.SetClock(func() time.Time { return t0 })
	tb.Cleanup(func() { s.Close() })
	return s
}

// MustOpen starts a backend and opens a store on it with a fixed clock.
func MustOpen(tb testing.TB) (*Store, backend) {
	tb.Helper()
	b := newBackend(tb)
	return b.open(tb), b
}

// MustOpenSingle is MustOpen on one redis-server, for fault tests that
// stop or restart it.
func MustOpenSingle(tb testing.TB) (*Store, *redistest.Server) {
	tb.Helper()
	srv := redistest.Start(tb)
	b := backend{cfg: Config{URL: srv.URL, Timeout: 2 * time.Second}, srv: srv}
	return b.open(tb), srv
}

// keysMatching runs KEYS on every master.
func keysMatching(tb testing.TB, s *Store, pattern string) []string {
	tb.Helper()
	var mu sync.Mutex
	var out []string
	each := func(ctx context.Context, c *redis.Client) error {
		k, err := c.Keys(ctx, pattern).Result()
		mu.Lock()
		out = append(out, k...)
		mu.Unlock()
		return err
	}
	ctx := context.Background()
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, each)
	} else {
		err = each(ctx, s.rdb.(*redis.Client))
	}
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// apply applies events and returns their results, failing on error.
func apply(tb testing.TB, s *Store, events ...fleet.Event) []fleet.Result {
	tb.Helper()
	res := make([]fleet.Result, len(events))
	for i := range events {
		if events[i].DurationSec == 0 && events[i].Type != fleet.EventSessionEnded {
			events[i].DurationSec = -1
		}
		if events[i].TS == 0 {
			events[i].TS = ms(t0)
		}
	}
	if err := s.Apply(context.Background(), events, res); err != nil {
		tb.Fatalf("apply: %v", err)
	}
	return res
}

func reg(dev, ws string, ts time.Time) fleet.Event {
	return fleet.Event{Type: fleet.EventDeviceRegistered, DeviceID: dev, WorkspaceID: ws, Name: "n-" + dev, OS: "Linux", TS: ms(ts)}
}

func online(dev string, on bool, ts time.Time, id string) fleet.Event {
	return fleet.Event{Type: fleet.EventOnlineChanged, DeviceID: dev, Online: on, TS: ms(ts), ID: id}
}

func started(dev, sid string, ts time.Time) fleet.Event {
	return fleet.Event{Type: fleet.EventSessionStarted, DeviceID: dev, SessionID: sid, TS: ms(ts), DurationSec: -1}
}

func ended(dev, sid, status string, dur int64, ts time.Time) fleet.Event {
	return fleet.Event{Type: fleet.EventSessionEnded, DeviceID: dev, SessionID: sid, Status: status, DurationSec: dur, TS: ms(ts)}
}

func stats(tb testing.TB, s *Store, ws string) fleet.WorkspaceStats {
	tb.Helper()
	all, err := s.Stats(context.Background())
	if err != nil {
		tb.Fatalf("stats: %v", err)
	}
	for _, st := range all {
		if st.Workspace == ws {
			return st
		}
	}
	tb.Fatalf("workspace %s not in stats", ws)
	return fleet.WorkspaceStats{}
}

func device(tb testing.TB, s *Store, ws, id string) fleet.Device {
	tb.Helper()
	d, err := s.Device(context.Background(), ws, id)
	if err != nil {
		tb.Fatalf("device %s/%s: %v", ws, id, err)
	}
	return d
}

func wantResults(tb testing.TB, got []fleet.Result, want ...fleet.Result) {
	tb.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		tb.Fatalf("results = %v, want %v", got, want)
	}
}

func TestRedisDownIsUnavailable(t *testing.T) {
	s, srv := MustOpenSingle(t)
	srv.Stop()
	res := make([]fleet.Result, 1)
	start := time.Now()
	err := s.Apply(context.Background(), []fleet.Event{online("d1", true, t0, "")}, res)
	if fleet.ErrorCode(err) != fleet.EUNAVAILABLE {
		t.Fatalf("err = %v, want unavailable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestScriptsReloadAfterRestart(t *testing.T) {
	s, srv := MustOpenSingle(t)
	apply(t, s, reg("d1", "a", t0))
	srv.Restart(t) // no persistence: scripts and data are gone
	wantResults(t, apply(t, s, reg("d2", "a", t0)), fleet.Accepted)
}
