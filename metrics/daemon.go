// Package metrics holds fleetd's Prometheus registry, the daemon's own
// metrics (handed to ingest and api, never promauto globals), and the
// collector that reads fleet state from the store at scrape time.
package metrics

import (
	"time"

	"net/http"
	"strconv"
	"sync"

	"github.com/fleetd/fleetd/fleet"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
)

// NewRegistry returns a registry with the Go and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves the registry in the Prometheus exposition format.
// Concurrent scrapes share one rendering (see sharedHandler): one scrape
// of 10,000 workspaces is a few megabytes of text to gather, encode and
// compress, which must not be paid per scraper. A rendering that ended
// less than shareFor ago answers too (0: only one in flight).
func Handler(reg *prometheus.Registry, shareFor time.Duration) fasthttp.RequestHandler {
	h := newSharedHandler(promHandler(reg))
	h.shareFor = shareFor
	return h.serve
}

// promHandler renders reg, as a net/http handler.
func promHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// Webhook are the webhook's own metrics. Counters for each event type and
// result are resolved once, so the hot path does no label lookups.
type Webhook struct {
	requests  *prometheus.CounterVec
	events    [fleet.NumEventTypes][fleet.NumResults]prometheus.Counter
	eventVec  *prometheus.CounterVec
	named     namedEvents
	Duration  prometheus.Histogram
	BatchSize prometheus.Histogram
	codes     codeCounters
}

// NewWebhook registers the webhook metrics with reg.
func NewWebhook(reg prometheus.Registerer) *Webhook {
	w := &Webhook{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetd_webhook_requests_total", Help: "Webhook requests by HTTP status code.",
		}, []string{"code"}),
		Duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fleetd_webhook_request_duration_seconds", Help: "Webhook request duration, from reading the body to the answer.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fleetd_ingest_batch_size", Help: "Events per group commit to the store.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8),
		}),
	}
	ev := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fleetd_webhook_events_total", Help: "Webhook events by type and result (accepted, duplicate, stale, ignored, invalid).",
	}, []string{"type", "result"})
	w.eventVec = ev
	for t := range w.events {
		for r := range w.events[t] {
			w.events[t][r] = ev.WithLabelValues(fleet.EventType(t).String(), fleet.Result(r).String())
		}
	}
	w.codes.init(w.requests)
	reg.MustRegister(w.requests, ev, w.Duration, w.BatchSize)
	return w
}

// Event counts one event of type t with result r.
func (w *Webhook) Event(t fleet.EventType, r fleet.Result) { w.events[t][r].Inc() }

// Request counts one webhook request answered with status code.
func (w *Webhook) Request(code int) { w.codes.get(code).Inc() }

// API are the REST API's own metrics.
type API struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	series   sync.Map // apiKey → apiSeries, resolved once per route and code
}

type apiKey struct {
	route string
	code  int
}

type apiSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// NewAPI registers the API metrics with reg.
func NewAPI(reg prometheus.Registerer) *API {
	a := &API{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetd_api_requests_total", Help: "REST API requests by route template and HTTP status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fleetd_api_request_duration_seconds", Help: "REST API request duration by route template.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
	}
	reg.MustRegister(a.requests, a.duration)
	return a
}

// Observe records one API request. route is the route template, never the
// raw path, so the label stays bounded.
func (a *API) Observe(route string, code int, seconds float64) {
	k := apiKey{route, code}
	v, ok := a.series.Load(k)
	if !ok {
		v, _ = a.series.LoadOrStore(k, apiSeries{
			requests: a.requests.WithLabelValues(route, strconv.Itoa(code)),
			duration: a.duration.WithLabelValues(route),
		})
	}
	s := v.(apiSeries)
	s.requests.Inc()
	s.duration.Observe(seconds)
}

// Connections are the listener's metrics: connections open now, and those
// refused at the connection limit.
type Connections struct {
	Refused prometheus.Counter
}

// NewConnections registers the connection metrics with reg; open reports
// the connections open now.
func NewConnections(reg prometheus.Registerer, open func() float64) *Connections {
	c := &Connections{Refused: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fleetd_connections_refused_total", Help: "Connections refused with 503 because --concurrency connections were open.",
	})}
	reg.MustRegister(c.Refused, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fleetd_connections_open", Help: "Client connections open now.",
	}, open))
	return c
}
