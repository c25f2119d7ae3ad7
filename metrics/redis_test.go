package metrics_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/syncbuf"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/redistest"
	"github.com/fleetd/fleetd/metrics"
	"github.com/fleetd/fleetd/redisstore"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// MustOpenStore opens a store on srv and closes it when the test ends.
func MustOpenStore(tb testing.TB, srv *redistest.Server, timeout time.Duration) *redisstore.Store {
	tb.Helper()
	store, err := redisstore.Open(context.Background(), redisstore.Config{URL: srv.URL, Timeout: timeout})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { store.Close() })
	return store
}

// MustApply applies events and fails the test on error.
func MustApply(tb testing.TB, store fleet.Ingester, events ...fleet.Event) []fleet.Result {
	tb.Helper()
	results := make([]fleet.Result, len(events))
	if err := store.Apply(context.Background(), events, results); err != nil {
		tb.Fatalf("apply: %v", err)
	}
	return results
}

// fleetSeries are the metrics whose values the Redis test pins.
var fleetSeries = []string{
	"fleet_devices", "fleet_devices_online", "fleet_sessions_live", "fleet_session_seconds_total",
	"fleet_sessions_ended_total", "fleetd_fleet_collect_success", "fleetd_fleet_workspaces",
	"fleetd_fleet_workspaces_overflow",
}

// TestFleetCollectorRedis runs the collector over the real store: what the
// webhook events did is what the scrape shows, zeros included.
func TestFleetCollectorRedis(t *testing.T) {
	srv := redistest.Start(t)
	store := MustOpenStore(t, srv, 0)
	now := time.Now().UnixMilli()
	reg := func(d, w string) fleet.Event {
		return fleet.Event{Type: fleet.EventDeviceRegistered, DeviceID: d, WorkspaceID: w, Name: "n-" + d, OS: "Linux", TS: now - 600_000, DurationSec: -1}
	}
	online := func(id, d string, on bool, ts int64) fleet.Event {
		return fleet.Event{Type: fleet.EventOnlineChanged, ID: id, DeviceID: d, Online: on, TS: ts, DurationSec: -1}
	}
	started := func(id, d, s string, ts int64) fleet.Event {
		return fleet.Event{Type: fleet.EventSessionStarted, ID: id, DeviceID: d, SessionID: s, TS: ts, DurationSec: -1}
	}
	ended := func(id, d, s, status string, dur, ts int64) fleet.Event {
		return fleet.Event{Type: fleet.EventSessionEnded, ID: id, DeviceID: d, SessionID: s, Status: status, DurationSec: dur, TS: ts}
	}
	MustApply(t, store, reg("d1", "acme"), reg("d2", "acme"), reg("d3", "acme"), reg("b1", "beta"))
	res := MustApply(t, store,
		online("e1", "d1", true, now-5000),
		online("e2", "d2", true, now-5000),
		online("e3", "d3", true, now-5000),
		online("e4", "d3", false, now-4000),
		online("e5", "b1", true, now-3000),
		online("e6", "b1", false, now-9000), // older than e5: stale
		started("e7", "d1", "s1", now-200_000),
		ended("e8", "d1", "s1", "success", 120, now-80_000),
		ended("e9", "d2", "s2", "failed", 30, now-60_000),
		ended("e10", "d2", "s3", "Weird Status", 10, now-50_000), // folded into other
		started("e11", "d3", "s4", now-10_000),                   // live
		ended("e12", "d1", "s1", "success", 120, now-80_000),     // redelivered under a new id
		online("e1", "d1", false, now-1000),                      // redelivered id: duplicate
	)
	if res[5] != fleet.Stale || res[11] != fleet.Duplicate || res[12] != fleet.Duplicate {
		t.Fatalf("store results %v: want e6 stale, e12 and the second e1 duplicate", res)
	}
	// A workspace known only through an API key still gets its zero series.
	if err := store.CreateKey(context.Background(), []byte("hash-of-a-key"), fleet.APIKey{ID: "k1", Workspace: "gamma", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}

	c := metrics.NewFleetCollector(store, 10000, slog.New(slog.DiscardHandler))
	metrics.MustCompareGolden(t, c, "redis.prom", fleetSeries...)
	problems, err := testutil.CollectAndLint(c)
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}

	// With a cap of 1 the scrape keeps acme and sums beta and gamma.
	metrics.MustCompareGolden(t, metrics.NewFleetCollector(store, 1, slog.New(slog.DiscardHandler)), "redis_cap1.prom", fleetSeries...)

	// Redis gone: the scrape still answers, quickly, with success 0 and a
	// warning in the log.
	srv.Stop()
	var logs syncbuf.Buffer
	c = metrics.NewFleetCollector(store, 10000, slog.New(slog.NewTextHandler(&logs, nil)))
	start := time.Now()
	metrics.MustCompareGolden(t, c, "error.prom", fleetSeries...)
	if took := time.Since(start); took > metrics.CollectTimeout {
		t.Errorf("a scrape with Redis down took %v", took)
	}
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("no warning logged with Redis down: %q", logs.String())
	}
}
