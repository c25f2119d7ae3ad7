package api

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// The three benchmarks are served the same way: a fasthttp.Server on a
// loopback port, driven by a fasthttp client from benchParallelism
// goroutines per CPU, so their request rates compare. BenchmarkBare is the
// ceiling (a handler answering 204); the issue asks /usage for 0.4x of it
// and a 50-device page of a 10,000-device workspace for 0.15x.

// benchParallelism: many concurrent clients, as behind a load balancer;
// with one per CPU the benchmarks would measure loopback latency instead.
const benchParallelism = 8

// benchClient serves h on loopback and returns a client for it.
func benchClient(b *testing.B, h fasthttp.RequestHandler) *fasthttp.HostClient {
	b.Helper()
	base := serve(b, h)
	c := &fasthttp.HostClient{Addr: strings.TrimPrefix(base, "http://"), MaxConns: 1024, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	b.Cleanup(c.CloseIdleConnections)
	return c
}

// runBench sends GET uri with key until b.N requests are answered with want.
func runBench(b *testing.B, c *fasthttp.HostClient, uri, key string, want int) {
	b.Helper()
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(res)
		req.SetRequestURI("http://" + c.Addr + uri)
		if key != "" {
			req.Header.Set("x-api-key", key)
		}
		for pb.Next() {
			if err := c.Do(req, res); err != nil {
				b.Error(err)
				return
			}
			if res.StatusCode() != want {
				b.Errorf("%s: %d %s", uri, res.StatusCode(), res.Body())
				return
			}
		}
	})
}

func BenchmarkBare(b *testing.B) {
	c := benchClient(b, func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusNoContent) })
	runBench(b, c, "/", "", fasthttp.StatusNoContent)
}

func BenchmarkUsage(b *testing.B) {
	e := MustEnv(b, envOptions{})
	key, _ := e.MustKey(b, "acme", true)
	// 100 devices, 2,000 sessions ended over the last 20 days (so both the
	// daily aggregates and the partial-day scans have work), 20 live.
	now := time.Now().UTC()
	var evs []ev
	for i := range 100 {
		evs = append(evs, registered(fmt.Sprintf("d%03d", i), "acme", "n", "Linux", now.Add(-30*24*time.Hour)))
	}
	for i := range 2000 {
		evs = append(evs, endedEv(fmt.Sprintf("d%03d", i%100), fmt.Sprintf("s%05d", i), "success", 60+i%600, now.Add(-time.Duration(i)*10*time.Minute)))
	}
	for i := range 20 {
		evs = append(evs, startedEv(fmt.Sprintf("d%03d", i), fmt.Sprintf("live%02d", i), now.Add(-time.Minute)))
	}
	sendBatches(b, e, evs)
	runBench(b, benchClient(b, e.srv.Handler()), "/api/v1/usage", key, 200)
}

func BenchmarkDevicesPage(b *testing.B) {
	e := MustEnv(b, envOptions{})
	key, _ := e.MustKey(b, "acme", true)
	now := time.Now().UTC()
	var evs []ev
	for i := range 10000 {
		evs = append(evs, registered(fmt.Sprintf("dev-%05d", i), "acme", fmt.Sprintf("qz-win-%d", i), "Windows", now.Add(-time.Hour)))
	}
	sendBatches(b, e, evs)
	runBench(b, benchClient(b, e.srv.Handler()), "/api/v1/devices?limit=50", key, 200)
}

// sendBatches posts events in webhook-sized batches.
func sendBatches(tb testing.TB, e *env, evs []ev) {
	tb.Helper()
	for len(evs) > 0 {
		n := min(len(evs), 1000)
		e.MustSend(tb, evs[:n]...)
		evs = evs[n:]
	}
}
