// Package api serves fleetd's HTTP surface over fasthttp: the webhook, the
// workspace-scoped REST API, health, readiness and metrics. Every non-2xx
// answer is the JSON error body {"error","status","message"}.
package api

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/metrics"
	"github.com/valyala/fasthttp"
)

// Submitter queues webhook events for a group commit (ingest.Batcher).
type Submitter interface {
	Submit(ctx context.Context, events []fleet.Event, results []fleet.Result) error
}

// Config holds the dependencies and limits of the HTTP surface.
type Config struct {
	Reader  fleet.Reader
	Keys    fleet.KeyStore
	Ingest  Submitter
	Webhook *metrics.Webhook
	API     *metrics.API
	// Metrics serves GET /metrics.
	Metrics fasthttp.RequestHandler
	// Ready reports whether the store answers (GET /readyz).
	Ready func(ctx context.Context) error
	Log   *slog.Logger
	// WebhookSecrets are the accepted x-webhook-secret values.
	WebhookSecrets []string
	// MaxBatch is the most events one webhook request may carry.
	MaxBatch int
	// IngestTimeout bounds a webhook request from decode to commit; past it
	// the answer is 503 with Retry-After.
	IngestTimeout time.Duration
	// KeyCacheTTL is how long a resolved API key is trusted without asking
	// the store again: a revoked key is refused within this time.
	KeyCacheTTL time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Server is the HTTP handler of fleetd. Safe for concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	draining atomic.Bool
	handler  fasthttp.RequestHandler
	keys     *keyCache
}

// New builds the server and its routes.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1000
	}
	if cfg.IngestTimeout <= 0 {
		cfg.IngestTimeout = time.Second
	}
	if cfg.KeyCacheTTL <= 0 {
		cfg.KeyCacheTTL = 2 * time.Second
	}
	s := &Server{cfg: cfg, log: cfg.Log, now: cfg.Now}
	s.keys = newKeyCache(cfg.KeyCacheTTL)
	s.handler = s.routes()
	return s
}

// Handler returns the fasthttp handler of every route.
func (s *Server) Handler() fasthttp.RequestHandler { return s.handler }

// SetDraining makes every request answer 503 with Retry-After and
// Connection: close, for a graceful shutdown.
func (s *Server) SetDraining() { s.draining.Store(true) }

// ErrorHandler answers requests that fasthttp rejects before routing (body
// too large, malformed request) with the JSON error body.
func ErrorHandler(ctx *fasthttp.RequestCtx, err error) {
	ctx.SetConnectionClose()
	if err == fasthttp.ErrBodyTooLarge {
		writeErrorBody(ctx, fasthttp.StatusRequestEntityTooLarge, "payload_too_large", "request body exceeds the size limit")
		return
	}
	if _, ok := err.(*fasthttp.ErrSmallBuffer); ok {
		writeErrorBody(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "invalid_request", "request headers are too large")
		return
	}
	writeErrorBody(ctx, fasthttp.StatusBadRequest, "invalid_request", "malformed HTTP request")
}
