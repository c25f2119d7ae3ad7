package metrics

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"
)

// gatedStats is a fleet.StatsReader that counts its reads and holds each
// one until the test lets it go.
type gatedStats struct {
	stats []fleet.WorkspaceStats
	err   error
	calls atomic.Int64
	gate  chan struct{} // nil: answer at once
}

func (g *gatedStats) StatsRange(ctx context.Context, offset, count int) ([]fleet.WorkspaceStats, int, error) {
	g.calls.Add(1)
	if g.gate != nil {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	return statsRange(g.stats, offset, count), len(g.stats), g.err
}

// waitCalls waits until n reads have started.
func waitCalls(t *testing.T, g *gatedStats, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for g.calls.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d reads started, want %d", g.calls.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCollectorSharesReads: scrapes that start while a read is in flight
// wait for it and get its series; scrapes within ShareFor of a successful
// read get it too; a failed read is not kept.
func TestCollectorSharesReads(t *testing.T) {
	g := &gatedStats{stats: []fleet.WorkspaceStats{ws("a", 3, 1, 0, 60, map[string]int64{"success": 1})}, gate: make(chan struct{})}
	c := NewFleetCollector(g, 10, discardLogger())
	c.shareFor = time.Hour
	var wg sync.WaitGroup
	results := make([]float64, 20)
	for i := range results {
		wg.Go(func() {
			reg := prometheus.NewRegistry()
			reg.MustRegister(c)
			mfs, err := reg.Gather()
			if err != nil {
				t.Error(err)
				return
			}
			for _, mf := range mfs {
				if mf.GetName() == "fleet_devices" {
					results[i] = mf.GetMetric()[0].GetGauge().GetValue()
				}
			}
		})
	}
	waitCalls(t, g, 1)
	time.Sleep(20 * time.Millisecond) // let the other scrapes join the read
	close(g.gate)
	wg.Wait()
	for i, v := range results {
		if v != 3 {
			t.Fatalf("scrape %d: fleet_devices %v, want 3", i, v)
		}
	}
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("%d store reads for 20 concurrent scrapes, want 1", n)
	}
	// Within ShareFor: no new read.
	testutil.CollectAndCount(c)
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("%d store reads, want the shared one", n)
	}
	// Past it: a new read.
	c.shareFor = 0
	testutil.CollectAndCount(c)
	if n := g.calls.Load(); n != 2 {
		t.Fatalf("%d store reads past ShareFor, want 2", n)
	}

	// A failure is shared by the scrapes that waited for it, not kept.
	g.err = errors.New("boom")
	if n := testutil.CollectAndCount(c); n != 2 {
		t.Fatalf("%d series on a failed read, want success and duration", n)
	}
	g.err = nil
	c.shareFor = time.Hour
	if n := testutil.CollectAndCount(c, "fleet_devices"); n != 1 {
		t.Fatalf("the failed read was kept: %d fleet_devices series", n)
	}
	if n := g.calls.Load(); n != 4 {
		t.Fatalf("%d store reads, want 4", n)
	}
}

// countingCollector counts its collections and holds each until released.
type countingCollector struct {
	desc  *prometheus.Desc
	calls atomic.Int64
	gate  chan struct{}
}

func (c *countingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *countingCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.calls.Add(1)
	if c.gate != nil {
		<-c.gate
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n))
}

func scrapeHandler(h fasthttp.RequestHandler, accept, encoding, query string) (int, string, []byte) {
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/metrics" + query)
	if accept != "" {
		ctx.Request.Header.Set("Accept", accept)
	}
	if encoding != "" {
		ctx.Request.Header.Set("Accept-Encoding", encoding)
	}
	h(&ctx)
	return ctx.Response.StatusCode(), string(ctx.Response.Header.ContentType()) + ";" + string(ctx.Response.Header.ContentEncoding()), append([]byte(nil), ctx.Response.Body()...)
}

// TestHandlerSharesRenderings: concurrent scrapes of /metrics that ask for
// the same format and compression get one rendering; others get their own.
func TestHandlerSharesRenderings(t *testing.T) {
	reg := prometheus.NewRegistry()
	cc := &countingCollector{desc: prometheus.NewDesc("test_collections", "Collections so far.", nil, nil), gate: make(chan struct{})}
	reg.MustRegister(cc)
	sh := newSharedHandler(promHandler(reg))
	sh.shareFor = time.Hour
	var wg sync.WaitGroup
	bodies := make([][]byte, 16)
	for i := range bodies {
		wg.Go(func() {
			status, _, b := scrapeHandler(sh.serve, "", "", "")
			if status != 200 {
				t.Errorf("status %d", status)
			}
			bodies[i] = b
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for cc.calls.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(cc.gate)
	wg.Wait()
	if n := cc.calls.Load(); n != 1 {
		t.Fatalf("%d renderings for 16 concurrent scrapes, want 1", n)
	}
	for i, b := range bodies {
		if !bytes.Contains(b, []byte("test_collections 1\n")) {
			t.Fatalf("scrape %d: %s", i, b)
		}
	}
	// Within ShareFor the same format is not rendered again; another
	// format or compression is, and so is a request with a query.
	scrapeHandler(sh.serve, "", "", "")
	if n := cc.calls.Load(); n != 1 {
		t.Fatalf("%d renderings, want the shared one", n)
	}
	_, ct, _ := scrapeHandler(sh.serve, "", "gzip", "")
	if !strings.HasSuffix(ct, ";gzip") || cc.calls.Load() != 2 {
		t.Fatalf("gzip: content %q after %d renderings", ct, cc.calls.Load())
	}
	_, ct, _ = scrapeHandler(sh.serve, "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", "", "")
	if !strings.HasPrefix(ct, "application/vnd.google.protobuf") || cc.calls.Load() != 3 {
		t.Fatalf("protobuf: content %q after %d renderings", ct, cc.calls.Load())
	}
	scrapeHandler(sh.serve, "", "", "?name[]=test_collections")
	scrapeHandler(sh.serve, "", "", "?name[]=test_collections")
	if n := cc.calls.Load(); n != 5 {
		t.Fatalf("%d renderings after two with a query, want 5", n)
	}
	// Past ShareFor: rendered again.
	sh.shareFor = 0
	_, _, b := scrapeHandler(sh.serve, "", "", "")
	if n := cc.calls.Load(); n != 6 || !bytes.Contains(b, []byte("test_collections 6\n")) {
		t.Fatalf("%d renderings past ShareFor: %s", n, b)
	}
}
