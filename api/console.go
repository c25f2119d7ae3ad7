package api

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/buildinfo"
	"github.com/valyala/fasthttp"
)

// The web console (SPEC §2) is GET /: server-rendered HTML whose health
// part needs no JavaScript, plus console.js, which reads the REST API with
// an API key pasted into the page. Everything is embedded: no build step,
// no request leaving the origin, and a Content-Security-Policy that allows
// only same-origin scripts, styles, images and fetches.

//go:embed console
var consoleFS embed.FS

var consoleTmpl = template.Must(template.ParseFS(consoleFS, "console/index.html"))

// consoleAssets are the files served under /console/, with their types.
var consoleAssets = map[string]string{
	"console.css": "text/css; charset=utf-8",
	"console.js":  "text/javascript; charset=utf-8",
	"favicon.svg": "image/svg+xml",
}

// consoleCSP is the Content-Security-Policy of every console answer:
// same-origin only, no inline script or style, no plugins, no framing,
// and no form submission at all (the key form is handled by script, so a
// key can never end up in a URL).
const consoleCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// DocsURL is where the console's docs link points: the README of the
// module's repository (a link only: the console loads nothing from it).
const DocsURL = "https://github.com/fleetd/fleetd#readme"

// consoleWindow is the span of the console's webhook rates.
const consoleWindow = 60

// consoleRefreshSeconds is how often console.js refreshes what it shows.
const consoleRefreshSeconds = 3

func setConsoleHeaders(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// consolePage is GET /.
func (s *Server) consolePage(ctx *fasthttp.RequestCtx, _ *principal) error {
	st := s.health()
	var buf bytes.Buffer
	err := consoleTmpl.Execute(&buf, struct {
		Health         healthStatus
		Docs           string
		RefreshSeconds int
	}{st, DocsURL, consoleRefreshSeconds})
	if err != nil {
		return fmt.Errorf("console template: %w", err)
	}
	setConsoleHeaders(ctx)
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetContentType("text/html; charset=utf-8")
	ctx.SetBody(buf.Bytes())
	return nil
}

// consoleStatus is GET /console/status: what the health part of the page
// shows, as JSON, for console.js to refresh it.
func (s *Server) consoleStatus(ctx *fasthttp.RequestCtx, _ *principal) error {
	b, err := json.Marshal(s.health())
	if err != nil {
		return err
	}
	setConsoleHeaders(ctx)
	ctx.Response.Header.Set("Cache-Control", "no-store")
	writeJSON(ctx, fasthttp.StatusOK, b)
	return nil
}

// consoleAsset is GET /console/{file}.
func (s *Server) consoleAsset(ctx *fasthttp.RequestCtx, _ *principal) error {
	name, _ := ctx.UserValue("file").(string)
	ct, ok := consoleAssets[name]
	if !ok {
		return fleet.Errorf(fleet.ENOTFOUND, "no console file %q", name)
	}
	b, err := consoleFS.ReadFile("console/" + name)
	if err != nil {
		return err
	}
	setConsoleHeaders(ctx)
	// Revalidated on every load, so a new binary's console is picked up
	// at once; the files are a few kB.
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.SetContentType(ct)
	ctx.SetBody(b)
	return nil
}

// healthStatus is the daemon's health and identity as the console shows
// it. Text holds each value formatted for people (the page and console.js
// show exactly these strings); the other fields are the raw values.
type healthStatus struct {
	Ready         bool              `json:"ready"`
	RedisMode     string            `json:"redis_mode"`
	Version       string            `json:"version"`
	Commit        string            `json:"commit"`
	GoVersion     string            `json:"go_version"`
	UptimeSeconds int64             `json:"uptime_seconds"`
	EventsPerSec  float64           `json:"webhook_events_per_second"`
	Requests      int64             `json:"webhook_requests"`
	Errors        int64             `json:"webhook_errors"`
	ErrorRate     float64           `json:"webhook_error_rate"`
	WindowSeconds int64             `json:"window_seconds"`
	QueueDepth    int               `json:"queue_depth"`
	Text          map[string]string `json:"text"`
}

// health gathers the console's health part. Readiness is asked of the
// store as /readyz does, within 1 s.
func (s *Server) health() healthStatus {
	now := s.console.now()
	bi := buildinfo.Get()
	st := healthStatus{RedisMode: s.cfg.RedisMode, Version: bi.Version, Commit: bi.Commit, GoVersion: bi.GoVersion}
	if st.RedisMode == "" {
		st.RedisMode = "unknown"
	}
	cause := ""
	st.Ready, cause = s.readiness()
	uptime := now.Sub(s.console.started)
	st.UptimeSeconds = int64(uptime / time.Second)
	w := s.console.window(now)
	st.WindowSeconds = w.span
	st.Requests, st.Errors = w.requests, w.errors
	if w.span > 0 {
		st.EventsPerSec = float64(w.events) / float64(w.span)
	}
	if w.requests > 0 {
		st.ErrorRate = float64(w.errors) / float64(w.requests)
	}
	if s.cfg.Queued != nil {
		st.QueueDepth = s.cfg.Queued()
	}
	ready := "ready"
	if !st.Ready {
		ready = "not ready"
	}
	errText := "no webhook requests"
	if w.requests > 0 {
		errText = fmt.Sprintf("%.1f %% (%d of %d %s)", 100*st.ErrorRate, w.errors, w.requests, plural(w.requests, "request"))
	}
	st.Text = map[string]string{
		"ready":       ready,
		"ready_cause": cause,
		"redis_mode":  redisModeText(st.RedisMode),
		"version":     fmt.Sprintf("%s (commit %s, %s)", bi.Version, bi.Commit, bi.GoVersion),
		"uptime":      formatUptime(uptime),
		"events_rate": fmt.Sprintf("%.1f events/s", st.EventsPerSec),
		"error_rate":  errText,
		"window":      fmt.Sprintf("over the last %d s", w.span),
		"queue_depth": fmt.Sprintf("%d events", st.QueueDepth),
		"as_of":       now.UTC().Format("2006-01-02 15:04:05 UTC"),
	}
	return st
}

// readiness is /readyz's answer with its cause in words for operators.
// The cause names the kind of failure only (a timeout, a refused
// connection, a Redis error word): the page needs no key, so it never
// shows an address or an error's text.
func (s *Server) readiness() (bool, string) {
	if s.draining.Load() {
		return false, "fleetd is shutting down"
	}
	if s.cfg.Ready == nil {
		return true, "no state store to check"
	}
	c, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	err := s.cfg.Ready(c)
	took := time.Since(start)
	if err == nil {
		return true, fmt.Sprintf("Redis answered PING in %.1f ms", float64(took.Microseconds())/1000)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return false, "Redis did not answer PING within 1 s"
	case errors.Is(err, syscall.ECONNREFUSED):
		return false, "Redis refused the connection"
	}
	msg := err.Error()
	for _, word := range []string{"LOADING", "CLUSTERDOWN", "MASTERDOWN", "READONLY", "BUSY", "NOAUTH", "WRONGPASS", "NOPERM"} {
		if strings.Contains(msg, word) {
			return false, "Redis answered " + word
		}
	}
	if fleet.ErrorCode(err) == fleet.EUNAVAILABLE {
		return false, "Redis is unreachable"
	}
	return false, "Redis answered PING with an error"
}

func plural(n int64, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func redisModeText(mode string) string {
	switch mode {
	case "embedded":
		return "embedded (in-process, not durable)"
	case "single":
		return "single server"
	case "cluster":
		return "cluster"
	}
	return mode
}

// formatUptime shows the two largest units: 3d 4h, 2h 5m, 5m 3s, 12s.
func formatUptime(d time.Duration) string {
	s := int64(d / time.Second)
	switch {
	case s >= 86400:
		return fmt.Sprintf("%dd %dh", s/86400, s%86400/3600)
	case s >= 3600:
		return fmt.Sprintf("%dh %dm", s/3600, s%3600/60)
	case s >= 60:
		return fmt.Sprintf("%dm %ds", s/60, s%60)
	}
	return fmt.Sprintf("%ds", s)
}

// consoleState is what the console shows that no other part keeps: the
// start time and one-second buckets of webhook traffic over the last
// consoleWindow seconds. It is fed once per webhook request (not per
// event), under a mutex: a few tens of nanoseconds next to a request's
// Redis round trip. Safe for concurrent use.
type consoleState struct {
	started time.Time
	now     func() time.Time
	mu      sync.Mutex
	buckets [consoleWindow]rateBucket
}

type rateBucket struct {
	sec                      int64 // Unix second the counts belong to
	events, requests, errors int64
}

func newConsoleState(started time.Time, now func() time.Time) *consoleState {
	if started.IsZero() {
		started = now()
	}
	return &consoleState{started: started, now: now}
}

func (c *consoleState) bucket(sec int64) *rateBucket {
	b := &c.buckets[sec%consoleWindow]
	if b.sec != sec {
		*b = rateBucket{sec: sec}
	}
	return b
}

// events counts n webhook events committed (or acknowledged as ignored).
func (c *consoleState) events(n int) {
	sec := c.now().Unix()
	c.mu.Lock()
	c.bucket(sec).events += int64(n)
	c.mu.Unlock()
}

// request counts one webhook request answered with status code; anything
// but 2xx is an error.
func (c *consoleState) request(code int) {
	sec := c.now().Unix()
	c.mu.Lock()
	b := c.bucket(sec)
	b.requests++
	if code < 200 || code > 299 {
		b.errors++
	}
	c.mu.Unlock()
}

type rateWindow struct {
	events, requests, errors int64
	span                     int64 // seconds covered: consoleWindow, or the uptime while shorter
}

// window sums the buckets of the last consoleWindow seconds up to now.
func (c *consoleState) window(now time.Time) rateWindow {
	sec := now.Unix()
	var w rateWindow
	c.mu.Lock()
	for i := range c.buckets {
		if b := &c.buckets[i]; b.sec > sec-consoleWindow && b.sec <= sec {
			w.events += b.events
			w.requests += b.requests
			w.errors += b.errors
		}
	}
	c.mu.Unlock()
	w.span = min(consoleWindow, max(1, sec-c.started.Unix()+1))
	return w
}

// countingSubmitter tells the console how many events each successful
// submission committed.
type countingSubmitter struct {
	Submitter
	c *consoleState
}

func (cs countingSubmitter) Submit(ctx context.Context, events []fleet.Event, results []fleet.Result) error {
	err := cs.Submitter.Submit(ctx, events, results)
	if err == nil {
		cs.c.events(len(events))
	}
	return err
}
