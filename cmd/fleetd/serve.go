package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/fleetd/fleetd/api"
	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/ingest"
	"github.com/fleetd/fleetd/internal/buildinfo"
	"github.com/fleetd/fleetd/internal/cli"
	"github.com/fleetd/fleetd/metrics"
	"github.com/fleetd/fleetd/redisstore"
	"github.com/valyala/fasthttp"
)

type serveConfig struct {
	addr             string
	redis            redisFlags
	webhookSecret    string
	webhookAuth      string
	maxBodyBytes     int
	maxInflightBody  int64
	maxBatch         int
	ingestTimeout    time.Duration
	queueEvents      int
	commitBatch      int
	commitWorkers    int
	liveSessionBound time.Duration
	retention        time.Duration
	readTimeout      time.Duration
	writeTimeout     time.Duration
	idleTimeout      time.Duration
	concurrency      int
	shutdownTimeout  time.Duration
	shutdownGrace    time.Duration
	keyCacheTTL      time.Duration
	authFailBurst    int
	authFailRefill   time.Duration
	throttledLookups int
	clientIPHeader   string
	maxWorkspaces    int
	maxKept          int
	replayStep       int
	overflowRate     int
	maxWS            int
	metricsShare     time.Duration
	logLevel         string
	debugAddr        string
	logFormat        string
}

func serveFlags(stdout io.Writer) (*cli.FlagSet, *serveConfig) {
	c := &serveConfig{}
	fs := cli.New("fleetd serve", "FLEETD_", stdout)
	fs.Synopsis = "fleetd [serve] [flags]"
	fs.About = `Runs the daemon: POST /backend/webhook, the REST API under /api/v1, GET /metrics,
/healthz and /readyz on one address. Without --redis-url or --redis-cluster it
runs on an embedded, non-durable in-process Redis and prints a webhook secret
and a demo API key.`
	fs.StringVar(&c.addr, "addr", ":8080", "listen address of the webhook, REST API, /metrics, /healthz and /readyz")
	c.redis.register(fs)
	fs.StringVar(&c.webhookSecret, "webhook-secret", "", "comma-separated list: shared x-webhook-secret values and whsec_ Standard Webhooks signing keys, several of each for rotation; required with Redis configured, generated and printed in embedded mode")
	fs.StringVar(&c.webhookAuth, "webhook-auth", api.AuthSecret, "webhook authentication: secret (x-webhook-secret), signature (Standard Webhooks v1 with the whsec_ keys of --webhook-secret) or any (either)")
	fs.IntVar(&c.maxBodyBytes, "max-body-bytes", 1<<20, "largest accepted request body in bytes; larger → 413")
	fs.Int64Var(&c.maxInflightBody, "max-inflight-body-bytes", 64<<20, "most bytes of request bodies held at once; a request past it → 503 with Retry-After before its body is read; at least --max-body-bytes; 0: no limit")
	fs.IntVar(&c.maxBatch, "max-batch", 1000, "most events in one webhook request; more → 400")
	fs.DurationVar(&c.ingestTimeout, "ingest-timeout", time.Second, "bound of a webhook request from decode to commit; past it → 503 with Retry-After")
	fs.IntVar(&c.queueEvents, "queue-events", 100000, "most events waiting for a commit; beyond it → 429 with Retry-After")
	fs.IntVar(&c.commitBatch, "commit-batch", 2000, "most events in one group commit to Redis")
	fs.IntVar(&c.commitWorkers, "commit-workers", 0, "group commits in flight at once; 0: 1 on a single Redis (one commit in flight makes the largest batches: measured best), 4 on a cluster (its masters work in parallel)")
	fs.DurationVar(&c.liveSessionBound, "live-session-bound", redisstore.DefaultLiveSessionBound, "a live session whose end has not arrived after this long stops counting as live (listed as abandoned)")
	fs.DurationVar(&c.retention, "retention", redisstore.DefaultRetention, "how long session records and daily active-device sets are kept")
	fs.DurationVar(&c.readTimeout, "read-timeout", 10*time.Second, "bound for reading a whole request (slow clients are cut off)")
	fs.DurationVar(&c.writeTimeout, "write-timeout", 10*time.Second, "bound for writing a response")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", 60*time.Second, "how long an idle keep-alive connection is kept")
	fs.IntVar(&c.concurrency, "concurrency", 64*1024, "most client connections open at once; one more is answered 503 (JSON, Retry-After) and closed; 0: no limit")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "bound of a graceful shutdown (finish requests, flush the queue)")
	fs.DurationVar(&c.shutdownGrace, "shutdown-grace", time.Second, "after SIGTERM, how long requests on kept-alive connections are answered 503 + Connection: close before idle connections are closed")
	fs.DurationVar(&c.keyCacheTTL, "key-cache-ttl", 2*time.Second, "how long a resolved API key is trusted; a revoked key is refused within this time")
	fs.IntVar(&c.authFailBurst, "auth-fail-burst", 20, "failed authentications (bad API key or webhook secret) allowed per client before 429; 0 disables the throttle")
	fs.DurationVar(&c.authFailRefill, "auth-fail-refill", time.Second, "one failed authentication is forgiven per client every this long")
	fs.IntVar(&c.throttledLookups, "auth-throttled-lookups", 20, "API keys per second a client blocked by the failed-auth throttle may still have looked up, so a valid key behind an attacker's address keeps working; keys found valid before are always looked up; 0: none")
	fs.StringVar(&c.clientIPHeader, "client-ip-header", "", "header whose first address identifies the client (e.g. X-Forwarded-For), only behind a proxy that sets it; default: the connection's address")
	fs.IntVar(&c.maxWorkspaces, "metrics-max-workspaces", 10000, "most workspace label values in /metrics; the rest are summed into workspace=\"_overflow\"")
	fs.IntVar(&c.maxKept, "max-kept-events", redisstore.DefaultMaxKeptSessions, "most sessions kept per device while they have no workspace (device not registered yet, or deleted); past it the oldest are dropped (fleetd_pending_dropped_total)")
	fs.IntVar(&c.replayStep, "replay-step", redisstore.DefaultReplayStep, "most sessions a registration (or a move) brings home within its commit; the rest follow in the background, as many again every 100 ms (fleetd_replays_deferred_total)")
	fs.IntVar(&c.overflowRate, "metrics-overflow-rate", metrics.DefaultOverflowRate, "workspaces a second that the background sum of the workspaces beyond --metrics-max-workspaces reads (when they outnumber the named ones); bounds what /metrics costs Redis")
	fs.IntVar(&c.maxWS, "max-workspaces", 1000000, "most workspaces that webhooks can make known (0: no bound); a registration naming one more is refused, 403 forbidden (fleetd_workspaces_refused_total)")
	fs.DurationVar(&c.metricsShare, "metrics-share", metrics.ShareFor, "a scrape of /metrics that ended less than this ago answers later scrapes too (0: only scrapes that arrive while one is in flight share it)")
	fs.StringVar(&c.debugAddr, "debug-addr", "", "if set, serve net/http/pprof on this separate address (e.g. 127.0.0.1:6060) for CPU and allocation profiles; never expose it")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	return fs, c
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, not %q", format)
}

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	started := time.Now()
	fs, c := serveFlags(stdout)
	if err := fs.Parse(args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fs.Usagef("unexpected argument %q", fs.Arg(0))
	}
	log, err := newLogger(stderr, c.logLevel, c.logFormat)
	if err != nil {
		return fs.Usagef("%v", err)
	}
	secrets := splitList(c.webhookSecret)

	var embedded *miniredis.Miniredis
	redisURL := c.redis.url
	if !c.redis.configured() {
		embedded = miniredis.NewMiniRedis()
		if err := embedded.StartAddr("127.0.0.1:0"); err != nil {
			return fmt.Errorf("embedded redis: %w", err)
		}
		defer embedded.Close()
		redisURL = "redis://" + embedded.Addr()
		log.Warn("NO REDIS CONFIGURED: running on an embedded in-memory Redis; state is NOT durable and is lost at exit. Set --redis-url (FLEETD_REDIS_URL) for production.")
	} else if len(secrets) == 0 {
		return fs.Usagef("--webhook-secret (FLEETD_WEBHOOK_SECRET) is required when Redis is configured")
	}

	reg := metrics.NewRegistry()
	bi := buildinfo.Get()
	metrics.NewBuildInfo(reg, bi.Version, bi.Commit, bi.GoVersion)
	rm := metrics.NewRedis(reg)
	store, err := redisstore.Open(ctx, redisstore.Config{
		URL: redisURL, Cluster: c.redis.clusterAddrs(), Timeout: c.redis.timeout,
		LiveSessionBound: c.liveSessionBound, Retention: c.retention, Observe: rm.Observe,
		MaxKeptSessions: c.maxKept, MaxWorkspaces: c.maxWS, ReplayStep: c.replayStep,
	})
	if err != nil {
		return err
	}
	defer store.Close()
	// Say at once whether Redis answers, and why not.
	ready := newReadiness(store.Ping, log, strings.HasPrefix(redisURL, "rediss://"))
	ready.Check(ctx)
	metrics.NewReady(reg, ready.Ready)

	var banner []string
	if embedded != nil {
		if len(secrets) == 0 {
			secrets = []string{randomAlnum(32)}
			banner = append(banner, "# generated webhook secret (send it as x-webhook-secret):", "export SECRET="+secrets[0])
		} else {
			banner = append(banner, "# webhook secret: the one given with --webhook-secret (FLEETD_WEBHOOK_SECRET)")
		}
		key, _, err := createKey(ctx, store, "demo", "demo", false)
		if err != nil {
			return fmt.Errorf("mint demo key: %w", err)
		}
		banner = append(banner, "# API key of workspace demo (send it as x-api-key):", "export KEY="+key)
	}

	wm := metrics.NewWebhook(reg)
	am := metrics.NewAPI(reg)
	lm := metrics.NewLimits(reg)
	metrics.NewKeptDropped(reg, store.KeptDropped)
	metrics.NewWorkspacesRefused(reg, store.WorkspacesRefused)
	metrics.NewReplaysDeferred(reg, store.ReplaysDeferred)
	fc := registerFleetCollector(reg, store, c.maxWorkspaces, c.overflowRate, c.metricsShare, log)
	defer fc.Close()
	// Sessions that placements left to move home, in the background.
	replays, stopReplays := context.WithCancel(context.Background())
	defer stopReplays()
	go store.RunReplays(replays, 100*time.Millisecond)

	if c.commitWorkers <= 0 {
		c.commitWorkers = 1
		if len(c.redis.clusterAddrs()) > 0 {
			c.commitWorkers = 4
		}
	}
	var batcher *ingest.Batcher // read by the queue gauge at scrape time only
	im := metrics.NewIngest(reg, func() float64 { return float64(batcher.Queued()) }, c.queueEvents)
	batcher = ingest.NewBatcher(store, ingest.Config{
		QueueEvents: c.queueEvents, MaxBatch: c.commitBatch, Workers: c.commitWorkers,
		CommitTimeout: c.ingestTimeout, Observe: func(n int) { wm.BatchSize.Observe(float64(n)) },
		ObserveCommit: im.ObserveCommit,
	})
	inflight := metrics.NewInFlight(reg)
	apiCfg := api.Config{
		Reader: store, Keys: store, Ingest: batcher, Webhook: wm, API: am,
		Metrics: metrics.Handler(reg, c.metricsShare), Ready: ready.Check, Log: log,
		WebhookSecrets: secrets, WebhookAuth: c.webhookAuth, MaxBatch: c.maxBatch, IngestTimeout: c.ingestTimeout, KeyCacheTTL: c.keyCacheTTL,
		AuthFailBurst: c.authFailBurst, AuthFailRefill: c.authFailRefill, ClientIPHeader: c.clientIPHeader,
		RedisMode: redisMode(embedded != nil, &c.redis), Queued: batcher.Queued, Started: started,
		MaxBodyBytes: c.maxBodyBytes, MaxInflightBodyBytes: c.maxInflightBody, ThrottledLookups: c.throttledLookups, Limits: lm,
	}
	srv, err := api.New(apiCfg)
	if err != nil {
		batcher.Close()
		return fs.Usagef("%v", err)
	}
	hs := &fasthttp.Server{
		Handler:            inflight.Wrap(srv.Handler()),
		ErrorHandler:       api.ErrorHandler,
		Name:               "fleetd",
		ReadTimeout:        c.readTimeout,
		WriteTimeout:       c.writeTimeout,
		IdleTimeout:        c.idleTimeout,
		MaxRequestBodySize: c.maxBodyBytes,
		// The listener enforces --concurrency with a JSON answer; fasthttp's
		// own plain-text refusal must never come first.
		Concurrency:           max(2*c.concurrency, 1<<20),
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		CloseOnShutdown:       true,
		SecureErrorLogMessage: true,
		Logger:                fasthttpLogger{log},
	}
	srv.StreamBodies(hs) // bodies are read by the handlers, once authenticated
	tcpln, err := net.Listen("tcp", c.addr)
	if err != nil {
		batcher.Close()
		return fmt.Errorf("listen: %w", err)
	}
	var conns *metrics.Connections
	ln := newGateListener(tcpln, c.concurrency, api.RawErrorResponse(errConnLimit), func() { conns.Refused.Inc() })
	conns = metrics.NewConnections(reg, func() float64 { return float64(ln.Open()) })
	hs.ConnState = func(_ net.Conn, st fasthttp.ConnState) {
		if st == fasthttp.StateClosed || st == fasthttp.StateHijacked {
			ln.Release()
		}
	}
	if c.debugAddr != "" {
		dln, err := net.Listen("tcp", c.debugAddr)
		if err != nil {
			ln.Close()
			batcher.Close()
			return fmt.Errorf("debug listen: %w", err)
		}
		defer dln.Close()
		go http.Serve(dln, pprofMux())
		log.Info("pprof listening", "addr", dln.Addr().String())
	}
	if embedded != nil {
		// A block that pastes into a shell as is: comments and exports.
		banner = append([]string{
			"# fleetd web console: " + localURL(ln.Addr().String()) + "/",
			"# embedded in-memory Redis: state is NOT durable and is lost at exit (set --redis-url for real use)",
			"# paste these lines into another shell, then try the README's curl examples:",
		}, banner...)
		fmt.Fprintln(stdout, strings.Join(banner, "\n"))
	}
	log.Info("fleetd listening", "addr", ln.Addr().String(), "version", bi.Version, "embedded_redis", embedded != nil, "cluster", len(c.redis.clusterAddrs()) > 0, "ready", ready.Ready())
	rctx, stopReady := context.WithCancel(ctx)
	defer stopReady()
	go ready.run(rctx)
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()

	select {
	case err := <-serveErr:
		batcher.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing requests and flushing the ingest queue")
	ln.StopAccepting()
	srv.SetDraining()
	// Requests on kept-alive connections get 503 + Connection: close for a
	// grace period, so clients move on before their connections are cut.
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	select {
	case <-time.After(c.shutdownGrace):
	case <-sctx.Done():
	}
	if err := hs.ShutdownWithContext(sctx); err != nil {
		log.Warn("shutdown: connections still open at the deadline", "err", err)
	}
	batcher.Close()
	log.Info("fleetd stopped")
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomAlnum returns n characters of [A-Za-z0-9] from crypto/rand,
// without modulo bias.
func randomAlnum(n int) string {
	out := make([]byte, 0, n)
	var buf [64]byte
	for len(out) < n {
		rand.Read(buf[:])
		for _, b := range buf {
			if b < 248 && len(out) < n { // 248 = 4*62
				out = append(out, alnum[b%62])
			}
		}
	}
	return string(out)
}

// fasthttpLogger routes fasthttp's own messages to slog at debug level:
// they are per-connection noise (timeouts, resets) under abuse. fasthttp
// quotes the offending request bytes in them (a header line that did not
// parse may carry an API key or a webhook secret), so only the text
// outside quotes is kept, cut short.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("http: " + redactQuoted(fmt.Sprintf(format, args...)))
}

// redactQuoted replaces every quoted part of msg by "…" and keeps at most
// 160 bytes; an unterminated quote hides the rest.
func redactQuoted(msg string) string {
	var b strings.Builder
	for {
		i := strings.IndexAny(msg, "\"'`")
		if i < 0 {
			b.WriteString(msg)
			break
		}
		b.WriteString(msg[:i])
		b.WriteString("…")
		j := strings.IndexByte(msg[i+1:], msg[i])
		if j < 0 {
			break
		}
		msg = msg[i+1+j+1:]
	}
	out := b.String()
	if len(out) > 160 {
		out = out[:160] + "…"
	}
	return out
}

var _ fleet.Ingester = (*redisstore.Store)(nil)

// errConnLimit answers a connection over --concurrency.
var errConnLimit = &fleet.Error{Code: fleet.EUNAVAILABLE, Message: "fleetd is serving as many connections as --concurrency allows; retry later or on another replica"}

// pprofMux serves the runtime profiles of net/http/pprof.
func pprofMux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return m
}
