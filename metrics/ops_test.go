package metrics_test

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"
)

// TestOnCallMetrics: build info, readiness, queue depth, commit and Redis
// call metrics export what they are told, and lint clean.
func TestOnCallMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.NewBuildInfo(reg, "1.2.3", "abc123", "go1.26.8")
	ready := true
	metrics.NewReady(reg, func() bool { return ready })
	queued := 7.0
	in := metrics.NewIngest(reg, func() float64 { return queued }, 100)
	in.ObserveCommit(5, 3*time.Millisecond, nil)
	in.ObserveCommit(5, 2*time.Second, errors.New("timeout"))
	r := metrics.NewRedis(reg)
	r.Observe("apply", 2*time.Millisecond, nil)
	r.Observe("apply", 300*time.Millisecond, errors.New("i/o timeout"))
	r.Observe("stats", time.Millisecond, nil)

	want := `
# HELP fleetd_build_info Always 1; the labels say which fleetd build this is.
# TYPE fleetd_build_info gauge
fleetd_build_info{goversion="go1.26.8",revision="abc123",version="1.2.3"} 1
# HELP fleetd_ingest_commit_failures_total Group commits that failed (Redis unreachable, too slow, or an error); their requests answered 503.
# TYPE fleetd_ingest_commit_failures_total counter
fleetd_ingest_commit_failures_total 1
# HELP fleetd_ingest_queue_capacity_events Most events that may wait for a commit (--queue-events); beyond it webhooks answer 429.
# TYPE fleetd_ingest_queue_capacity_events gauge
fleetd_ingest_queue_capacity_events 100
# HELP fleetd_ingest_queue_events Events waiting for a group commit now.
# TYPE fleetd_ingest_queue_events gauge
fleetd_ingest_queue_events 7
# HELP fleetd_ready 1 when the last readiness check found Redis answering (as /readyz), 0 when not.
# TYPE fleetd_ready gauge
fleetd_ready 0
# HELP fleetd_redis_call_errors_total Redis round trips that failed (unreachable, timeout, error reply) by store operation.
# TYPE fleetd_redis_call_errors_total counter
fleetd_redis_call_errors_total{op="apply"} 1
fleetd_redis_call_errors_total{op="stats"} 0
`
	ready = false
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "fleetd_build_info", "fleetd_ready", "fleetd_ingest_queue_events",
		"fleetd_ingest_queue_capacity_events", "fleetd_ingest_commit_failures_total", "fleetd_redis_call_errors_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "fleetd_redis_call_duration_seconds"); n != 2 {
		t.Errorf("fleetd_redis_call_duration_seconds has %d series, want one per op (2)", n)
	}
	if n := testutil.CollectAndCount(reg, "fleetd_ingest_commit_duration_seconds"); n != 1 {
		t.Errorf("fleetd_ingest_commit_duration_seconds: %d series", n)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

// TestInFlight: a request being handled counts until it is answered.
func TestInFlight(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := metrics.NewInFlight(reg)
	entered, release := make(chan struct{}), make(chan struct{})
	h := f.Wrap(func(ctx *fasthttp.RequestCtx) {
		close(entered)
		<-release
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	done := make(chan error, 1)
	go func() {
		resp, err := http.Post("http://"+ln.Addr().String()+"/x", "application/json", strings.NewReader(strings.Repeat("x", 1234)))
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-entered
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP fleetd_requests_in_flight HTTP requests being handled now (webhook, REST API, metrics, health).
# TYPE fleetd_requests_in_flight gauge
fleetd_requests_in_flight 1
`)); err != nil {
		t.Error(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(gaugeOf(t, reg, "fleetd_requests_in_flight")); v != 0 {
		t.Errorf("in flight after the answer: %v", v)
	}
}

func gaugeOf(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: "copy"}, func() float64 { return mf.GetMetric()[0].GetGauge().GetValue() })
		}
	}
	t.Fatalf("%s not exported", name)
	return nil
}
