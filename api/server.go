// Package api serves fleetd's HTTP surface over fasthttp: the webhook, the
// workspace-scoped REST API, health, readiness and metrics. Every non-2xx
// answer is the JSON error body {"error","status","message"}.
package api

import (
	"context"
	"fmt"
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
	// WebhookSecrets are the accepted x-webhook-secret values and, for
	// entries starting with "whsec_", Standard Webhooks signing keys.
	WebhookSecrets []string
	// WebhookAuth is AuthSecret (the default), AuthSignature or AuthAny.
	WebhookAuth string
	// MaxBatch is the most events one webhook request may carry.
	MaxBatch int
	// MaxBodyBytes is the largest request body read (default 1 MiB); a
	// larger one is answered 413. It applies to a server set up with
	// StreamBodies; otherwise fasthttp's MaxRequestBodySize does.
	MaxBodyBytes int
	// MaxInflightBodyBytes bounds the bytes of request bodies held at once
	// (with StreamBodies); past it a request is answered 503 with
	// Retry-After before its body is read. Zero: no bound. It must be at
	// least MaxBodyBytes.
	MaxInflightBodyBytes int64
	// IngestTimeout bounds a webhook request from decode to commit; past it
	// the answer is 503 with Retry-After.
	IngestTimeout time.Duration
	// KeyCacheTTL is how long a resolved API key is trusted without asking
	// the store again: a revoked key is refused within this time.
	KeyCacheTTL time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// AuthFailBurst failed authentications are allowed per client before
	// it gets 429; one more is forgiven every AuthFailRefill. Zero burst
	// disables the throttle.
	AuthFailBurst  int
	AuthFailRefill time.Duration
	// ThrottledLookups is how many well-formed API keys per second a
	// client that the throttle blocks may still have looked up, so that a
	// valid key behind the address of an attacker keeps working; 0: none.
	ThrottledLookups int
	// ClientIPHeader, when set (e.g. X-Forwarded-For behind a trusted load
	// balancer), names the header whose first address identifies a client.
	ClientIPHeader string
	// RedisMode is how the store reaches Redis, as the console shows it:
	// "embedded", "single" or "cluster".
	RedisMode string
	// Queued reports the events waiting for a commit (ingest's
	// Batcher.Queued), for the console.
	Queued func() int
	// Started is when the daemon started, for the console's uptime; zero
	// means when New runs.
	Started time.Time
	// Limits counts when the bounds on what clients send bite (nil: not
	// counted).
	Limits *metrics.Limits
}

// Server is the HTTP handler of fleetd. Safe for concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	draining atomic.Bool
	handler  fasthttp.RequestHandler
	keys     *keyCache
	throttle *authThrottle // nil: disabled
	reads    readGroup     // identical reads share one store call
	bodies   bodyBudget    // request bodies held
	secrets  [][]byte      // shared x-webhook-secret values
	signing  [][]byte      // Standard Webhooks signing keys
	refusals refusalLog    // webhook 503s and 429s, logged rate-limited
	console  *consoleState
	// headerAuth is the auth mode of the routes admitted from their
	// headers alone, by path, for requests that expect 100-continue.
	headerAuth map[string]authMode
}

// New builds the server and its routes. It refuses a configuration that
// cannot serve: a malformed signing key, an unknown webhook auth mode, a
// mode without the keys it needs, an in-flight body bound below the body
// limit.
func New(cfg Config) (*Server, error) {
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
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.MaxInflightBodyBytes > 0 && cfg.MaxInflightBodyBytes < int64(cfg.MaxBodyBytes) {
		return nil, fmt.Errorf("--max-inflight-body-bytes (%d) must be 0 or at least --max-body-bytes (%d): a body of the largest size could never be read", cfg.MaxInflightBodyBytes, cfg.MaxBodyBytes)
	}
	s := &Server{cfg: cfg, log: cfg.Log, now: cfg.Now, reads: readGroup{slots: map[readKey]*readSlot{}}}
	s.bodies.limit = cfg.MaxInflightBodyBytes
	if cfg.Limits != nil {
		s.bodies.gauge = cfg.Limits.BodyBytes
	}
	if err := s.setWebhookAuth(); err != nil {
		return nil, err
	}
	if cfg.AuthFailBurst > 0 {
		if cfg.AuthFailRefill <= 0 {
			cfg.AuthFailRefill = time.Second
		}
		s.throttle = newAuthThrottle(cfg.AuthFailBurst, cfg.AuthFailRefill, cfg.ThrottledLookups, cfg.Now)
	}
	s.keys = newKeyCache(cfg.KeyCacheTTL)
	s.console = newConsoleState(cfg.Started, cfg.Now)
	if cfg.Ingest != nil {
		s.cfg.Ingest = countingSubmitter{cfg.Ingest, s.console}
	}
	s.headerAuth = s.headerAuthModes()
	s.handler = s.gate(s.router().Handler)
	return s, nil
}

// setWebhookAuth splits the configured secret list into shared secrets and
// signing keys and checks that the webhook auth mode has what it needs.
func (s *Server) setWebhookAuth() error {
	secrets, signing, err := WebhookKeys(s.cfg.WebhookSecrets)
	if err != nil {
		return err
	}
	for _, sec := range secrets {
		s.secrets = append(s.secrets, []byte(sec))
	}
	s.signing = signing
	switch s.cfg.WebhookAuth {
	case "":
		s.cfg.WebhookAuth = AuthSecret
	case AuthSecret, AuthSignature, AuthAny:
	default:
		return fmt.Errorf("webhook auth must be secret, signature or any, not %q", s.cfg.WebhookAuth)
	}
	if s.cfg.WebhookAuth != AuthSecret && len(signing) == 0 {
		return fmt.Errorf("webhook auth %q needs a whsec_ signing key in the secret list", s.cfg.WebhookAuth)
	}
	if s.cfg.WebhookAuth != AuthSignature && len(s.secrets) == 0 {
		return fmt.Errorf("webhook auth %q needs a shared secret (an entry without whsec_) in the secret list", s.cfg.WebhookAuth)
	}
	return nil
}

// Handler returns the fasthttp handler of every route.
func (s *Server) Handler() fasthttp.RequestHandler { return s.handler }

// SetDraining makes every request answer 503 with Retry-After and
// Connection: close, for a graceful shutdown.
func (s *Server) SetDraining() { s.draining.Store(true) }
