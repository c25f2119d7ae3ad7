package metrics

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/syncbuf"

	"github.com/fleetd/fleetd/fleet"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

var update = flag.Bool("update", false, "rewrite the golden testdata/*.prom files from what the collector emits")

// fakeStats is an in-memory fleet.StatsReader. It returns the same slice to
// every caller, as a caching reader might, so the collector must not modify it.
type fakeStats struct {
	stats []fleet.WorkspaceStats
	err   error
	block bool // wait for the context to end, like a store that hangs
}

func (f *fakeStats) StatsRange(ctx context.Context, offset, count int) ([]fleet.WorkspaceStats, int, error) {
	if f.block {
		<-ctx.Done()
		return nil, 0, fmt.Errorf("fake: stats: %w", ctx.Err())
	}
	return statsRange(f.stats, offset, count), len(f.stats), f.err
}

// statsRange is the part of all that StatsRange(offset, count) reads.
func statsRange(all []fleet.WorkspaceStats, offset, count int) []fleet.WorkspaceStats {
	if offset >= len(all) {
		return nil
	}
	end := len(all)
	if count >= 0 {
		end = min(end, offset+count)
	}
	return all[offset:end]
}

// fleetNames are the deterministic metrics of the collector: everything but
// the collection duration, which is checked on its own.
var fleetNames = []string{
	"fleet_devices", "fleet_devices_online", "fleet_sessions_live", "fleet_session_seconds_total",
	"fleet_sessions_ended_total", "fleetd_fleet_collect_success", "fleetd_fleet_workspaces",
	"fleetd_fleet_workspaces_overflow",
}

// discardLogger drops everything.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// MustCompareGolden compares what c emits (names only) with
// testdata/<golden>, or rewrites the file under -update.
func MustCompareGolden(tb testing.TB, c prometheus.Collector, golden string, names ...string) {
	tb.Helper()
	path := filepath.Join("testdata", golden)
	if *update {
		b, err := testutil.CollectAndFormat(c, expfmt.TypeTextPlain, names...)
		if err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("golden file: %v (run with -update to create it)", err)
	}
	defer f.Close()
	if err := testutil.CollectAndCompare(c, f, names...); err != nil {
		tb.Errorf("%s differs from what the collector emits:\n%v", path, err)
	}
}

func ws(name string, devices, online, live, seconds int64, ended map[string]int64) fleet.WorkspaceStats {
	return fleet.WorkspaceStats{Workspace: name, Devices: devices, Online: online, LiveSessions: live,
		SessionSeconds: seconds, Ended: ended}
}

func TestFleetCollectorGolden(t *testing.T) {
	tests := map[string]struct {
		stats  []fleet.WorkspaceStats
		max    int
		golden string
	}{
		"basic": {
			stats: []fleet.WorkspaceStats{
				ws("beta", 0, 0, 0, 0, nil), // known, empty: zeros, status="success" included
				ws("acme", 3, 2, 1, 150, map[string]int64{"success": 4, "failed": 1}),
			},
			max: 10000, golden: "basic.prom",
		},
		"no workspaces": {max: 10000, golden: "empty.prom"},
		"status folding": {
			stats: []fleet.WorkspaceStats{
				ws("acme", 1, 1, 0, 90, map[string]int64{
					"success": 1, "failed": 2, "timeout": 3, "cancelled": 4, "error": 5,
					"Success": 10, "aborted": 20, "": 30, "a\xffb": 40,
				}),
				ws("beta", 1, 0, 0, 7, map[string]int64{"weird": 2}), // no success: still exported as 0
			},
			max: 10000, golden: "status_folding.prom",
		},
		"overflow": {
			// Unsorted on purpose. With a cap of 2, a and b keep their
			// series; c, d and a workspace literally named _overflow are
			// summed.
			stats: []fleet.WorkspaceStats{
				ws("d", 4, 4, 4, 400, map[string]int64{"failed": 4}),
				ws("b", 2, 2, 2, 200, map[string]int64{"success": 2}),
				ws("_overflow", 5, 0, 0, 0, nil),
				ws("c", 3, 3, 3, 300, map[string]int64{"success": 3, "nope": 1}),
				ws("a", 1, 1, 1, 100, map[string]int64{"success": 1}),
			},
			max: 2, golden: "overflow.prom",
		},
		"cap zero sums everything": {
			stats: []fleet.WorkspaceStats{ws("b", 2, 1, 0, 20, nil), ws("a", 1, 1, 1, 10, map[string]int64{"error": 1})},
			max:   0, golden: "cap_zero.prom",
		},
		"negative cap is no cap": {
			stats: []fleet.WorkspaceStats{ws("b", 2, 1, 0, 20, nil), ws("a", 1, 1, 1, 10, nil), ws("x\xff", 1, 0, 0, 0, nil)}, // invalid UTF-8 cannot be a label value
			max:   -1, golden: "no_cap.prom",
		},
		"repeated workspace is summed": {
			stats: []fleet.WorkspaceStats{
				ws("a", 1, 1, 0, 10, map[string]int64{"success": 1}),
				ws("a", 2, 0, 1, 5, map[string]int64{"success": 1, "failed": 1}),
			},
			max: 10000, golden: "repeated.prom",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := NewFleetCollector(&fakeStats{stats: tc.stats}, tc.max, discardLogger())
			MustCompareGolden(t, c, tc.golden, fleetNames...)
			if n := testutil.CollectAndCount(c, "fleetd_fleet_collect_duration_seconds"); n != 1 {
				t.Errorf("fleetd_fleet_collect_duration_seconds: %d series, want 1", n)
			}
			problems, err := testutil.CollectAndLint(c)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range problems {
				t.Errorf("lint: %s: %s", p.Metric, p.Text)
			}
		})
	}
}

func TestFleetCollectorDoesNotModifyInput(t *testing.T) {
	stats := []fleet.WorkspaceStats{ws("b", 1, 0, 0, 0, nil), ws("a", 1, 0, 0, 0, nil)}
	c := NewFleetCollector(&fakeStats{stats: stats}, 10, discardLogger())
	testutil.CollectAndCount(c)
	if stats[0].Workspace != "b" || stats[1].Workspace != "a" {
		t.Errorf("the reader's slice was reordered: %v", stats)
	}
}

// TestFleetCollectorOverflowKeepsTotals checks the cap at a larger size: the
// number of workspace label values is the cap plus one, and sums over the
// workspace label equal the fleet's totals.
func TestFleetCollectorOverflowKeepsTotals(t *testing.T) {
	const n, limit = 250, 100
	var stats []fleet.WorkspaceStats
	var devices, seconds, ended int64
	for i := range n {
		s := ws(fmt.Sprintf("ws-%04d", n-i), int64(i), int64(i/2), int64(i%3), int64(10*i),
			map[string]int64{"success": int64(i), fmt.Sprintf("free-text-%d", i): 1})
		devices += s.Devices
		seconds += s.SessionSeconds
		ended += int64(i) + 1
		stats = append(stats, s)
	}
	c := NewFleetCollector(&fakeStats{stats: stats}, limit, discardLogger())
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]float64{}
	labels := map[string]map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			sums[mf.GetName()] += v
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] == nil {
					labels[l.GetName()] = map[string]bool{}
				}
				labels[l.GetName()][l.GetValue()] = true
			}
		}
	}
	if got := len(labels["workspace"]); got != limit+1 {
		t.Errorf("%d workspace label values, want %d", got, limit+1)
	}
	// The first ones the reader lists (the order they became known) are kept.
	if !labels["workspace"][OverflowWorkspace] || !labels["workspace"]["ws-0250"] || !labels["workspace"]["ws-0151"] || labels["workspace"]["ws-0150"] {
		t.Errorf("wrong workspaces kept: want ws-0250..ws-0151 (the first %d listed) and _overflow", limit)
	}
	if got := len(labels["status"]); got != 2 {
		t.Errorf("status label values %v, want success and other", labels["status"])
	}
	for name, want := range map[string]int64{
		"fleet_devices": devices, "fleet_session_seconds_total": seconds, "fleet_sessions_ended_total": ended,
		"fleetd_fleet_workspaces": n, "fleetd_fleet_workspaces_overflow": n - limit,
	} {
		if got := sums[name]; got != float64(want) {
			t.Errorf("sum of %s = %v, want %d", name, got, want)
		}
	}
}

func TestFleetCollectorError(t *testing.T) {
	tests := map[string]struct {
		reader  *fakeStats
		timeout time.Duration
		wantLog string
	}{
		"store error": {reader: &fakeStats{err: errors.New("redisstore: stats: connection refused")},
			timeout: CollectTimeout, wantLog: "connection refused"},
		"store hangs": {reader: &fakeStats{block: true}, timeout: 50 * time.Millisecond,
			wantLog: "context deadline exceeded"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var logs syncbuf.Buffer
			c := NewFleetCollector(tc.reader, 10000, slog.New(slog.NewTextHandler(&logs, nil)))
			c.timeout = tc.timeout
			start := time.Now()
			// Only the success gauge (0) and the duration: no fleet series.
			MustCompareGolden(t, c, "error.prom", fleetNames...)
			if took := time.Since(start); took > tc.timeout+2*time.Second {
				t.Errorf("collect took %v with a timeout of %v", took, tc.timeout)
			}
			if n := testutil.CollectAndCount(c); n != 2 {
				t.Errorf("%d series on error, want 2 (success and duration)", n)
			}
			if out := logs.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, tc.wantLog) {
				t.Errorf("log %q: want a WARN line with %q", out, tc.wantLog)
			}
			problems, err := testutil.CollectAndLint(c)
			if err != nil || len(problems) > 0 {
				t.Errorf("lint: %v %v", problems, err)
			}
		})
	}
}

// TestFleetCollectorFailureLogging checks that a lasting failure is logged
// once per interval, not once per scrape, and that recovery is logged.
func TestFleetCollectorFailureLogging(t *testing.T) {
	var logs syncbuf.Buffer
	r := &fakeStats{err: errors.New("boom")}
	c := NewFleetCollector(r, 10, slog.New(slog.NewTextHandler(&logs, nil)))
	c.warnEvery = time.Hour
	for range 5 {
		testutil.CollectAndCount(c)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings for 5 failed scrapes within the interval, want 1:\n%s", n, logs.String())
	}
	c.warnEvery = 0
	testutil.CollectAndCount(c)
	if n := strings.Count(logs.String(), "level=WARN"); n != 2 {
		t.Errorf("%d warnings after the interval, want 2", n)
	}
	if !strings.Contains(logs.String(), "consecutive_failures=6") {
		t.Errorf("log does not count the failures:\n%s", logs.String())
	}
	r.err = nil
	testutil.CollectAndCount(c)
	testutil.CollectAndCount(c)
	if n := strings.Count(logs.String(), "level=INFO"); n != 1 || !strings.Contains(logs.String(), "failed_collections=6") {
		t.Errorf("want one recovery line:\n%s", logs.String())
	}
}

func TestFleetCollectorConcurrentScrapes(t *testing.T) {
	var stats []fleet.WorkspaceStats
	for i := range 50 {
		stats = append(stats, ws(fmt.Sprintf("w%02d", 49-i), 1, 1, 0, 0, map[string]int64{"success": 1}))
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewFleetCollector(&fakeStats{stats: stats}, 20, discardLogger()))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if _, err := reg.Gather(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestFleetCollectorWalksALargeOverflow: with more overflow workspaces than
// a scrape reads itself, scrapes read only the named ones, and the
// _overflow sum comes from a background walk, exact once it has completed,
// with its age.
func TestFleetCollectorWalksALargeOverflow(t *testing.T) {
	const n, limit = syncOverflow + 205, 100
	var stats []fleet.WorkspaceStats
	var devices int64
	for i := range n {
		s := ws(fmt.Sprintf("ws-%05d", i), 1+int64(i%7), 0, 0, 0, nil)
		devices += s.Devices
		stats = append(stats, s)
	}
	f := &countingStats{fakeStats: fakeStats{stats: stats}}
	c := NewFleetCollectorSharing(f, limit, 0, discardLogger())
	c.SetOverflowRate(1 << 30) // no pause between chunks
	defer c.Close()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	sum := func() (float64, bool) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var total float64
		overflow := false
		for _, mf := range mfs {
			if mf.GetName() != "fleet_devices" {
				continue
			}
			for _, m := range mf.GetMetric() {
				total += m.GetGauge().GetValue()
				overflow = overflow || m.GetLabel()[0].GetValue() == OverflowWorkspace
			}
		}
		return total, overflow
	}
	if _, overflow := sum(); overflow {
		t.Fatal("an _overflow sum before the walk could have completed")
	}
	if got := f.scraped.Load(); got != limit {
		t.Fatalf("the scrape read %d workspaces, want the %d named (the rest is the walk's)", got, limit)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if total, overflow := sum(); overflow {
			if total != float64(devices) {
				t.Fatalf("sum of fleet_devices = %v, want %d", total, devices)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no _overflow sum after 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := testutil.CollectAndCount(c, "fleetd_fleet_overflow_age_seconds"); n != 1 {
		t.Fatalf("fleetd_fleet_overflow_age_seconds: %d series", n)
	}
}

// countingStats counts the workspaces read from the first one on (by a
// scrape; the walk starts past the named ones).
type countingStats struct {
	fakeStats
	scraped atomic.Int64
}

func (c *countingStats) StatsRange(ctx context.Context, offset, count int) ([]fleet.WorkspaceStats, int, error) {
	st, known, err := c.fakeStats.StatsRange(ctx, offset, count)
	if offset == 0 {
		c.scraped.Add(int64(len(st)))
	}
	return st, known, err
}
