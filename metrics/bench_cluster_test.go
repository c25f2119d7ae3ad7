package metrics_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/redistest"
	"github.com/fleetd/fleetd/metrics"
	"github.com/fleetd/fleetd/redisstore"
)

// BenchmarkCollect10kWorkspacesCluster is BenchmarkCollect10kWorkspaces on
// a real 3-master Redis Cluster: memory per device is the growth of
// used_memory summed over the masters (replicas hold a copy each).
func BenchmarkCollect10kWorkspacesCluster(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 1M-device fleet; not under -short")
	}
	shape := FleetShape{Workspaces: 10_000, DevicesPerWS: 100, OnlinePerWS: 20, EndedPerWS: 2, RegistrationsPer: 20_000}
	devices := shape.Workspaces * shape.DevicesPerWS
	c := redistest.StartCluster(b)
	masters := c.Masters(b)
	mem := func() int64 {
		var n int64
		for _, m := range masters {
			n += usedMemory(b, m.Addr)
		}
		return n
	}
	store, err := redisstore.Open(context.Background(), redisstore.Config{Cluster: c.Addrs(), Timeout: 30 * time.Second, DeviceCacheSize: devices})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	before := mem()
	start := time.Now()
	MustBuildFleet(b, store, shape)
	bytesPerDevice := float64(mem()-before) / float64(devices)
	b.Logf("cluster: built %d devices in %v; used_memory over %d masters grew %.1f B/device",
		devices, time.Since(start).Round(time.Millisecond), len(masters), bytesPerDevice)
	reader, err := redisstore.Open(context.Background(), redisstore.Config{Cluster: c.Addrs()})
	if err != nil {
		b.Fatal(err)
	}
	defer reader.Close()
	// Every iteration reads the store (no read shared between scrapes), as
	// the first scrape after a quiet second does.
	col := metrics.NewFleetCollectorSharing(reader, 10_000, 0, slog.New(slog.DiscardHandler))
	mustCheckTotals(b, col, shape)
	b.Run("scrape", func(b *testing.B) { benchScrape(b, col, bytesPerDevice) })
}
