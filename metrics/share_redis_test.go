package metrics_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/redistest"
	"github.com/fleetd/fleetd/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// countedReads counts the store reads of a real store.
type countedReads struct {
	fleet.StatsReader
	n atomic.Int64
}

func (c *countedReads) StatsRange(ctx context.Context, offset, count int) ([]fleet.WorkspaceStats, int, error) {
	c.n.Add(1)
	return c.StatsReader.StatsRange(ctx, offset, count)
}

// TestConcurrentScrapesShareOneRead is case 4 of the bounds issue: 48
// concurrent scrapes of the daemon's /metrics handler at 10,000 workspaces
// in a real redis-server cost one store read, and each gets every
// workspace's series. (scripts/bounds.sh scrapes measures their time and
// fleetd's RSS.)
func TestConcurrentScrapesShareOneRead(t *testing.T) {
	const workspaces = 10_000
	srv := redistest.Start(t)
	store := MustOpenStore(t, srv, 30*time.Second)
	MustBuildFleet(t, store, FleetShape{Workspaces: workspaces, DevicesPerWS: 1, OnlinePerWS: 1, EndedPerWS: 1, RegistrationsPer: 5000})
	reads := &countedReads{StatsReader: MustOpenStore(t, srv, 0)}
	reg := metrics.NewRegistry()
	reg.MustRegister(metrics.NewFleetCollector(reads, workspaces, slog.New(slog.DiscardHandler)))
	h := metrics.Handler(reg, metrics.ShareFor)
	scrape := func() []byte {
		var ctx fasthttp.RequestCtx
		ctx.Request.SetRequestURI("/metrics")
		h(&ctx)
		if ctx.Response.StatusCode() != 200 {
			t.Errorf("status %d", ctx.Response.StatusCode())
		}
		return append([]byte(nil), ctx.Response.Body()...)
	}
	for round := range 3 {
		before := reads.n.Load()
		var wg sync.WaitGroup
		bodies := make([][]byte, 48)
		start := make(chan struct{})
		for i := range bodies {
			wg.Go(func() { <-start; bodies[i] = scrape() })
		}
		close(start)
		wg.Wait()
		if n := reads.n.Load() - before; n != 1 {
			t.Fatalf("round %d: %d store reads for 48 concurrent scrapes, want 1", round, n)
		}
		for i, b := range bodies {
			if got := bytes.Count(b, []byte("\nfleet_devices{workspace=")); got != workspaces {
				t.Fatalf("round %d, scrape %d: %d fleet_devices series, want %d", round, i, got, workspaces)
			}
			if !bytes.Contains(b, []byte("\nfleetd_fleet_collect_success 1\n")) {
				t.Fatalf("round %d, scrape %d: collection failed", round, i)
			}
		}
		time.Sleep(metrics.ShareFor) // the next round reads again
	}
}

var _ prometheus.Collector = (*metrics.FleetCollector)(nil)
