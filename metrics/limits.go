package metrics

import "github.com/prometheus/client_golang/prometheus"

// Reasons of fleetd_request_bodies_refused_total.
const (
	// BodyUnread: the request was answered without reading the body it
	// sent (refused from its headers, or a route that takes no body); its
	// connection was closed.
	BodyUnread = "unread"
	// BodyInFlightLimit: --max-inflight-body-bytes of bodies were held
	// already (503).
	BodyInFlightLimit = "in_flight_limit"
	// BodyTooLarge: the body was over --max-body-bytes (413).
	BodyTooLarge = "too_large"
)

// Limits are the metrics of the bounds fleetd puts on what clients send,
// each counting when its bound bites. Safe for concurrent use.
type Limits struct {
	// Throttled counts requests answered 429 by the failed-authentication
	// throttle.
	Throttled prometheus.Counter
	// ThrottledLookups counts API keys looked up for a client that the
	// throttle blocks, from its lookup allowance.
	ThrottledLookups prometheus.Counter
	// BodyBytes is the bytes of request bodies held in memory now.
	BodyBytes prometheus.Gauge
	refused   *prometheus.CounterVec
	byReason  map[string]prometheus.Counter
}

// NewLimits registers the limit metrics with reg.
func NewLimits(reg prometheus.Registerer) *Limits {
	l := &Limits{
		Throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetd_auth_throttled_total",
			Help: "Requests answered 429 by the failed-authentication throttle (--auth-fail-burst, --auth-fail-refill).",
		}),
		ThrottledLookups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetd_auth_throttled_lookups_total",
			Help: "API keys looked up for a client the failed-authentication throttle blocks (--auth-throttled-lookups).",
		}),
		BodyBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetd_request_body_bytes_in_flight",
			Help: "Bytes of request bodies held in memory now (bounded by --max-inflight-body-bytes).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetd_request_bodies_refused_total",
			Help: "Requests whose body fleetd did not read, by reason: unread (answered from the headers, connection closed), in_flight_limit (503, --max-inflight-body-bytes), too_large (413, --max-body-bytes).",
		}, []string{"reason"}),
		byReason: map[string]prometheus.Counter{},
	}
	for _, r := range []string{BodyUnread, BodyInFlightLimit, BodyTooLarge} {
		l.byReason[r] = l.refused.WithLabelValues(r)
	}
	reg.MustRegister(l.Throttled, l.ThrottledLookups, l.BodyBytes, l.refused)
	return l
}

// BodyRefused returns the counter of bodies not read for reason (one of
// the Body* constants).
func (l *Limits) BodyRefused(reason string) prometheus.Counter { return l.byReason[reason] }

// NewKeptDropped registers fleetd_pending_dropped_total, read from the
// store's count (redisstore.Store.KeptDropped).
func NewKeptDropped(reg prometheus.Registerer, dropped func() uint64) {
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "fleetd_pending_dropped_total",
		Help: "Session events kept for devices without a home for them (unregistered, deleted) that were dropped, the oldest first, past --max-kept-events per device.",
	}, func() float64 { return float64(dropped()) }))
}

// NewWorkspacesRefused registers fleetd_workspaces_refused_total, read from
// the store's count (redisstore.Store.WorkspacesRefused).
func NewWorkspacesRefused(reg prometheus.Registerer, refused func() uint64) {
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "fleetd_workspaces_refused_total",
		Help: "Webhook requests refused (403) because a registration would have made one workspace more known than --max-workspaces.",
	}, func() float64 { return float64(refused()) }))
}

// NewReplaysDeferred registers fleetd_replays_deferred_total, read from the
// store's count (redisstore.Store.ReplaysDeferred).
func NewReplaysDeferred(reg prometheus.Registerer, deferred func() uint64) {
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "fleetd_replays_deferred_total",
		Help: "Registrations and moves that had more sessions to bring home than --replay-step: the rest moved in the background.",
	}, func() float64 { return float64(deferred()) }))
}
