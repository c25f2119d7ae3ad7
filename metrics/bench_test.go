package metrics_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/redistest"
	"github.com/fleetd/fleetd/metrics"
	"github.com/fleetd/fleetd/redisstore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// FleetShape says how big a fleet MustBuildFleet builds.
type FleetShape struct {
	Workspaces       int
	DevicesPerWS     int
	OnlinePerWS      int // the first OnlinePerWS devices of each workspace go online
	EndedPerWS       int // sessions ended per workspace, 60 s each, alternating success/failed
	RegistrationsPer int // registrations per Apply call
}

// MustBuildFleet writes a fleet into store through Apply, the same path as
// the webhook, in large batches: one Apply of a few tens of thousands of
// registrations is a handful of pipelined round trips. Workspaces are named
// ws-00000…, devices <ws>-d000…. Two writers keep Redis busy while the other
// encodes its next batch.
func MustBuildFleet(tb testing.TB, store fleet.Ingester, shape FleetShape) {
	tb.Helper()
	perBatch := max(1, shape.RegistrationsPer/shape.DevicesPerWS) // workspaces per batch
	now := time.Now().UnixMilli()
	batches := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 2 {
		wg.Go(func() {
			for first := range batches {
				last := min(first+perBatch, shape.Workspaces)
				err := applyBatch(store, shape, first, last, now)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for first := 0; first < shape.Workspaces; first += perBatch {
		batches <- first
	}
	close(batches)
	wg.Wait()
	if firstErr != nil {
		tb.Fatalf("build fleet: %v", firstErr)
	}
}

// applyBatch registers, then brings online and ends sessions in, the
// workspaces [first, last).
func applyBatch(store fleet.Ingester, shape FleetShape, first, last int, now int64) error {
	ctx := context.Background()
	n := (last - first) * shape.DevicesPerWS
	events := make([]fleet.Event, 0, n)
	for w := first; w < last; w++ {
		ws := fmt.Sprintf("ws-%05d", w)
		for d := range shape.DevicesPerWS {
			events = append(events, fleet.Event{Type: fleet.EventDeviceRegistered, TS: now - 60_000,
				DeviceID: fmt.Sprintf("%s-d%03d", ws, d), WorkspaceID: ws, Name: fmt.Sprintf("host-%03d", d), OS: "Linux", DurationSec: -1})
		}
	}
	if err := store.Apply(ctx, events, make([]fleet.Result, len(events))); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	events = events[:0]
	for w := first; w < last; w++ {
		ws := fmt.Sprintf("ws-%05d", w)
		for d := range shape.OnlinePerWS {
			events = append(events, fleet.Event{Type: fleet.EventOnlineChanged, TS: now - 30_000,
				DeviceID: fmt.Sprintf("%s-d%03d", ws, d), Online: true, DurationSec: -1})
		}
		for s := range shape.EndedPerWS {
			status := "success"
			if s%2 == 1 {
				status = "failed"
			}
			events = append(events, fleet.Event{Type: fleet.EventSessionEnded, TS: now - 10_000,
				DeviceID: fmt.Sprintf("%s-d%03d", ws, s%shape.DevicesPerWS), SessionID: fmt.Sprintf("%s-s%d", ws, s),
				Status: status, DurationSec: 60})
		}
	}
	if len(events) == 0 {
		return nil
	}
	if err := store.Apply(ctx, events, make([]fleet.Result, len(events))); err != nil {
		return fmt.Errorf("online/sessions: %w", err)
	}
	return nil
}

// MustRedisInfo returns the fields of one INFO section, read with a bare
// RESP exchange: the metrics package does not import a Redis client.
func MustRedisInfo(tb testing.TB, addr, section string) map[string]string {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatalf("redis info: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "*2\r\n$4\r\nINFO\r\n$%d\r\n%s\r\n", len(section), section)
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(head, "$") {
		tb.Fatalf("redis info: reply %q: %v", head, err)
	}
	size, err := strconv.Atoi(strings.TrimSpace(head[1:]))
	if err != nil {
		tb.Fatalf("redis info: reply %q", head)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(r, body); err != nil {
		tb.Fatalf("redis info: %v", err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(body), "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = v
		}
	}
	return out
}

func usedMemory(tb testing.TB, addr string) int64 {
	tb.Helper()
	n, err := strconv.ParseInt(MustRedisInfo(tb, addr, "memory")["used_memory"], 10, 64)
	if err != nil {
		tb.Fatalf("used_memory: %v", err)
	}
	return n
}

// BenchmarkCollect10kWorkspaces measures the collector at the scale of SPEC
// §5: 10,000 workspaces of 100 devices (1,000,000 devices, 20 online and 2
// ended sessions per workspace) in a real redis-server. It reports the cost
// of one Collect, of one whole scrape (gather and text encoding, what
// Prometheus waits for) and Redis memory per device. Building the fleet takes
// a few tens of seconds, once: benchmarks only run under -bench, and -short
// skips this one.
func BenchmarkCollect10kWorkspaces(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 1M-device fleet; not under -short")
	}
	shape := FleetShape{Workspaces: 10_000, DevicesPerWS: 100, OnlinePerWS: 20, EndedPerWS: 2, RegistrationsPer: 20_000}
	devices := shape.Workspaces * shape.DevicesPerWS
	srv := redistest.Start(b)
	store, err := redisstore.Open(context.Background(), redisstore.Config{URL: srv.URL, Timeout: 30 * time.Second, DeviceCacheSize: devices})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	before := usedMemory(b, srv.Addr)
	start := time.Now()
	MustBuildFleet(b, store, shape)
	build := time.Since(start)
	bytesPerDevice := float64(usedMemory(b, srv.Addr)-before) / float64(devices)
	b.Logf("built %d workspaces, %d devices in %v (%.0f devices/s); Redis used_memory grew %.1f B/device",
		shape.Workspaces, devices, build.Round(time.Millisecond), float64(devices)/build.Seconds(), bytesPerDevice)

	// The store's default timeouts, as the daemon runs it.
	reader, err := redisstore.Open(context.Background(), redisstore.Config{URL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	defer reader.Close()
	// Every iteration reads the store (no read shared between scrapes), as
	// the first scrape after a quiet second does.
	c := metrics.NewFleetCollectorSharing(reader, 10_000, 0, slog.New(slog.DiscardHandler))
	mustCheckTotals(b, c, shape)

	b.Run("collect", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ch := make(chan prometheus.Metric, 1024)
			go func() { c.Collect(ch); close(ch) }()
			for range ch {
			}
		}
		b.ReportMetric(bytesPerDevice, "B/device")
	})
	b.Run("scrape", func(b *testing.B) { benchScrape(b, c, bytesPerDevice) })
}

// benchScrape measures a whole scrape of c: gather and encode as text.
func benchScrape(b *testing.B, c prometheus.Collector, bytesPerDevice float64) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	b.ReportAllocs()
	for b.Loop() {
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(bytesPerDevice, "B/device")
}

// mustCheckTotals checks that the fleet that was built is the fleet the
// collector sees, so the benchmark measures a complete scrape.
func mustCheckTotals(tb testing.TB, c prometheus.Collector, shape FleetShape) {
	tb.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	got := map[string]float64{}
	series := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			series++
		}
	}
	want := map[string]float64{
		"fleet_devices":                float64(shape.Workspaces * shape.DevicesPerWS),
		"fleet_devices_online":         float64(shape.Workspaces * shape.OnlinePerWS),
		"fleet_session_seconds_total":  float64(shape.Workspaces * shape.EndedPerWS * 60),
		"fleet_sessions_ended_total":   float64(shape.Workspaces * shape.EndedPerWS),
		"fleetd_fleet_workspaces":      float64(shape.Workspaces),
		"fleetd_fleet_collect_success": 1,
	}
	for name, w := range want {
		if got[name] != w {
			tb.Fatalf("%s sums to %v, want %v", name, got[name], w)
		}
	}
	tb.Logf("one scrape: %d series", series)
}
