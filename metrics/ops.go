package metrics

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// The signals an on-call reads first (SPEC §5): which build runs, whether
// it is ready, how full the ingest queue is, how long commits and Redis
// calls take and how many fail, and how many requests hold a body in
// memory now.

// NewBuildInfo registers fleetd_build_info{version,revision,goversion} 1.
func NewBuildInfo(reg prometheus.Registerer, version, revision, goVersion string) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fleetd_build_info", Help: "Always 1; the labels say which fleetd build this is.",
	}, []string{"version", "revision", "goversion"})
	g.WithLabelValues(version, revision, goVersion).Set(1)
	reg.MustRegister(g)
}

// NewReady registers fleetd_ready, read from ready at scrape time: 1 when
// the last readiness check of the store succeeded, 0 when it failed.
func NewReady(reg prometheus.Registerer, ready func() bool) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fleetd_ready", Help: "1 when the last readiness check found Redis answering (as /readyz), 0 when not.",
	}, func() float64 {
		if ready() {
			return 1
		}
		return 0
	}))
}

// Ingest are the metrics of the group-commit queue.
type Ingest struct {
	commit   prometheus.Histogram
	failures prometheus.Counter
}

// NewIngest registers the ingest queue's metrics: queued reports the
// events waiting for a commit now, capacity is --queue-events.
func NewIngest(reg prometheus.Registerer, queued func() float64, capacity int) *Ingest {
	in := &Ingest{
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fleetd_ingest_commit_duration_seconds", Help: "Duration of one group commit to Redis, failed ones included.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetd_ingest_commit_failures_total", Help: "Group commits that failed (Redis unreachable, too slow, or an error); their requests answered 503.",
		}),
	}
	reg.MustRegister(in.commit, in.failures,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fleetd_ingest_queue_events", Help: "Events waiting for a group commit now.",
		}, queued),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fleetd_ingest_queue_capacity_events", Help: "Most events that may wait for a commit (--queue-events); beyond it webhooks answer 429.",
		}, func() float64 { return float64(capacity) }))
	return in
}

// ObserveCommit records one group commit; it fits ingest.Config.ObserveCommit.
func (in *Ingest) ObserveCommit(_ int, d time.Duration, err error) {
	in.commit.Observe(d.Seconds())
	if err != nil {
		in.failures.Inc()
	}
}

// Redis are the metrics of the calls to Redis, by operation.
type Redis struct {
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	ops      sync.Map // op → redisSeries, resolved once per operation
}

type redisSeries struct {
	duration prometheus.Observer
	errors   prometheus.Counter
}

// NewRedis registers fleetd_redis_call_duration_seconds{op} and
// fleetd_redis_call_errors_total{op}. The op values are the store's
// operation names, a bounded set (redisstore.Config.Observe).
func NewRedis(reg prometheus.Registerer) *Redis {
	r := &Redis{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fleetd_redis_call_duration_seconds", Help: "Duration of one Redis round trip (a command or a pipeline) by store operation, failed ones included.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetd_redis_call_errors_total", Help: "Redis round trips that failed (unreachable, timeout, error reply) by store operation.",
		}, []string{"op"}),
	}
	reg.MustRegister(r.duration, r.errors)
	return r
}

// Observe records one Redis call; it fits redisstore.Config.Observe.
func (r *Redis) Observe(op string, d time.Duration, err error) {
	v, ok := r.ops.Load(op)
	if !ok {
		v, _ = r.ops.LoadOrStore(op, redisSeries{duration: r.duration.WithLabelValues(op), errors: r.errors.WithLabelValues(op)})
	}
	s := v.(redisSeries)
	s.duration.Observe(d.Seconds())
	if err != nil {
		s.errors.Inc()
	}
}

// InFlight counts the HTTP requests being handled now. (The bytes of
// their bodies that fleetd holds are fleetd_request_body_bytes_in_flight,
// counted where bodies are read: Limits.)
type InFlight struct {
	requests atomic.Int64
}

// NewInFlight registers fleetd_requests_in_flight.
func NewInFlight(reg prometheus.Registerer) *InFlight {
	f := &InFlight{}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fleetd_requests_in_flight", Help: "HTTP requests being handled now (webhook, REST API, metrics, health).",
	}, func() float64 { return float64(f.requests.Load()) }))
	return f
}

// Wrap counts the requests that h handles.
func (f *InFlight) Wrap(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		f.requests.Add(1)
		defer f.requests.Add(-1)
		h(ctx)
	}
}
