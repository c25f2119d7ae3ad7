package main

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fleetd/fleetd/internal/redistest"
	"github.com/valyala/fasthttp"
)

// benchDaemon starts fleetd on a real redis-server with devices registered
// over 10 workspaces.
func benchDaemon(b *testing.B, devices int) *daemon {
	srv := redistest.Start(b)
	d := MustStart(b, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret}, "--log-level", "warn")
	for lo := 0; lo < devices; lo += 1000 {
		var sb strings.Builder
		sb.WriteByte('[')
		for i := lo; i < lo+1000 && i < devices; i++ {
			if i > lo {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"type":"device.registered","qdDeviceId":"bd%d","workspaceId":"bw%d","name":"n","os":"Linux"}`, i, i%10)
		}
		sb.WriteByte(']')
		if r := d.webhook(b, sb.String()); r.code != 200 {
			b.Fatalf("register: %d %s", r.code, r.raw)
		}
	}
	return d
}

// benchPost posts bodies from gen in parallel and fails on any non-200.
func benchPost(b *testing.B, d *daemon, events int, gen func(n uint64) []byte) {
	client := &fasthttp.Client{MaxConnsPerHost: 256}
	url := d.base + "/backend/webhook"
	var seq atomic.Uint64
	b.SetParallelism(32) // 64 concurrent requests on 2 cores, like wrk -c64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		for pb.Next() {
			req.Reset()
			req.SetRequestURI(url)
			req.Header.SetMethod("POST")
			req.Header.Set("x-webhook-secret", testSecret)
			req.SetBody(gen(seq.Add(1)))
			if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
				b.Errorf("post: %v %d %s", err, resp.StatusCode(), resp.Body())
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N*events)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkWebhookSingle measures the whole ingest path (HTTP, decode,
// queue, group commit, Lua in Redis) with one event per request.
func BenchmarkWebhookSingle(b *testing.B) {
	d := benchDaemon(b, 10000)
	benchPost(b, d, 1, func(n uint64) []byte {
		return fmt.Appendf(nil, `{"type":"device.online.changed","qdDeviceId":"bd%d","online":%v}`, (n*7919)%10000, n%2 == 0)
	})
}

// BenchmarkWebhookBatch100 is the same with 100 events per request.
func BenchmarkWebhookBatch100(b *testing.B) {
	d := benchDaemon(b, 10000)
	benchPost(b, d, 100, func(n uint64) []byte {
		buf := []byte{'['}
		for i := uint64(0); i < 100; i++ {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = fmt.Appendf(buf, `{"type":"device.online.changed","qdDeviceId":"bd%d","online":%v}`, ((n*100+i)*7919)%10000, (n+i)%2 == 0)
		}
		return append(buf, ']')
	})
}
