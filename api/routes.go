package api

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/fasthttp/router"
	"github.com/fleetd/fleetd/fleet"
	"github.com/valyala/fasthttp"
)

// authMode is how a route admits a request. It is decided from the
// headers, before the body is read (body.go); every route that
// authenticates reads its body once admitted, the public ones never do.
type authMode uint8

const (
	// authNone: public (probes, metrics, the OpenAPI document, the
	// console). Takes no body.
	authNone authMode = iota
	// authWebhook: the right x-webhook-secret, or plausible Standard
	// Webhooks headers (the handler verifies the signature over the body).
	authWebhook
	// authQuickDesk: a well-formed X-Webhook-Signature (the handler
	// verifies the HMAC over the body).
	authQuickDesk
	// authKey: an API key, read-only or not.
	authKey
	// authWriteKey: an API key that is not read-only (403 for one that is).
	authWriteKey
)

// metricsKind is which request metrics count a route.
type metricsKind uint8

const (
	noMetrics metricsKind = iota
	// apiMetrics: fleetd_api_requests_total and
	// fleetd_api_request_duration_seconds by route template.
	apiMetrics
	// webhookMetrics: fleetd_webhook_requests_total,
	// fleetd_webhook_request_duration_seconds and the console's rates.
	webhookMetrics
)

// handler is the work of one route: it answers ctx and returns nil, or
// returns the error to answer with (errorTable). p is the caller of a route
// that takes an API key, nil on the others. A handler must not keep ctx.
type handler func(ctx *fasthttp.RequestCtx, p *principal) error

// route is one line of the routing table.
type route struct {
	methods string // "GET", "POST", or "GET HEAD"
	path    string // the router's template, and the route label of metrics
	auth    authMode
	metrics metricsKind
	// drains: answered 503 with Connection: close once SetDraining is
	// called (the probes that must keep answering do not).
	drains bool
	handle handler
}

// routes is every route of fleetd, each declared once; router serves
// them and TestOpenAPIMatchesRouter keeps openapi.json in step with it.
func (s *Server) routes() []route {
	const drains, stays = true, false
	rs := []route{
		{"POST", webhookPath, authWebhook, webhookMetrics, drains, s.webhook},
		{"POST", quickdeskPath, authQuickDesk, webhookMetrics, drains, s.quickdesk},

		{"GET", "/api/v1/devices", authKey, apiMetrics, drains, s.listDevices},
		{"GET", "/api/v1/devices/{id}", authKey, apiMetrics, drains, s.getDevice},
		{"POST", "/api/v1/devices/{id}/unbind", authWriteKey, apiMetrics, drains, s.unbindDevice},
		{"POST", "/api/v1/devices/{id}/secret:rotate", authWriteKey, apiMetrics, drains, s.rotateSecret},
		{"GET", "/api/v1/sessions", authKey, apiMetrics, drains, s.listSessions},
		{"GET", "/api/v1/usage", authKey, apiMetrics, drains, s.usage},
		{"GET", "/api/v1/members", authKey, apiMetrics, drains, s.listMembers},
		{"POST", "/api/v1/members:invite", authWriteKey, apiMetrics, drains, s.inviteMember},

		// SPEC §4 makes the OpenAPI document public; the console reads the
		// REST API with the key pasted into it and has no privileges.
		{"GET", "/api/openapi.json", authNone, apiMetrics, drains, s.openapi},
		{"GET", "/", authNone, apiMetrics, drains, s.consolePage},
		{"GET", "/console/status", authNone, apiMetrics, drains, s.consoleStatus},
		{"GET", "/console/{file}", authNone, apiMetrics, drains, s.consoleAsset},

		// HEAD answers like GET without a body (fasthttp skips it for HEAD).
		{"GET HEAD", "/healthz", authNone, noMetrics, stays, s.healthz},
		{"GET HEAD", "/readyz", authNone, noMetrics, drains, s.readyz},
	}
	if s.cfg.Metrics != nil {
		rs = append(rs, route{"GET", "/metrics", authNone, noMetrics, stays, s.serveMetrics})
	}
	return rs
}

// router builds the router of routes. Every route goes through pipeline
// with its template spelled out, so metric labels never depend on the raw
// path; what no route serves is answered through errorTable too.
func (s *Server) router() *router.Router {
	r := router.New()
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = true
	// OPTIONS on a known path answers 204 with Allow (RFC 9110), without
	// authentication: it reveals only the methods.
	r.HandleOPTIONS = true
	r.GlobalOPTIONS = func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusNoContent) }
	for _, rt := range s.routes() {
		h := s.pipeline(&rt)
		for _, m := range strings.Fields(rt.methods) {
			r.Handle(m, rt.path, h)
		}
	}
	r.NotFound = func(ctx *fasthttp.RequestCtx) {
		writeErrorBody(ctx, fleet.Errorf(fleet.ENOTFOUND, "no route for %s %s", ctx.Method(), ctx.Path()))
	}
	r.MethodNotAllowed = func(ctx *fasthttp.RequestCtx) {
		writeErrorBody(ctx, fleet.Errorf(fleet.ENOTALLOWED, "%s is not allowed on %s", ctx.Method(), ctx.Path()))
	}
	r.PanicHandler = func(ctx *fasthttp.RequestCtx, v any) {
		s.log.Error("panic in handler", "path", string(ctx.Path()), "panic", fmt.Sprint(v))
		ctx.Response.Reset()
		writeErrorBody(ctx, errInternal)
	}
	return r
}

// headerAuthModes maps the paths of the routes admitted from their headers
// alone (the webhooks, all POST) to their mode, for expect.
func (s *Server) headerAuthModes() map[string]authMode {
	m := map[string]authMode{}
	for _, rt := range s.routes() {
		if rt.auth == authWebhook || rt.auth == authQuickDesk {
			m[rt.path] = rt.auth
		}
	}
	return m
}

// errDraining answers every route that drains once SetDraining is called.
var errDraining = fleet.Errorf(fleet.EUNAVAILABLE, "fleetd is shutting down, retry later")

// pipeline is the one way into every route: the route's request metrics
// time and count the whole answer, a draining server refuses it, its auth
// mode admits it from the headers, its body (if it takes one) is read, and
// its handler runs. The error of any step is answered through errorTable.
func (s *Server) pipeline(rt *route) fasthttp.RequestHandler {
	if rt.metrics == noMetrics {
		return func(ctx *fasthttp.RequestCtx) { s.run(ctx, rt) }
	}
	return func(ctx *fasthttp.RequestCtx) {
		start := time.Now()
		// A panic is answered by the router's PanicHandler after this
		// frame is gone; count it here as the 500 it becomes.
		defer func() {
			if v := recover(); v != nil {
				s.observe(rt, fasthttp.StatusInternalServerError, start)
				panic(v)
			}
		}()
		s.observe(rt, s.run(ctx, rt), start)
	}
}

// run takes one request through the steps of rt and returns its status.
func (s *Server) run(ctx *fasthttp.RequestCtx, rt *route) int {
	if err := s.steps(ctx, rt); err != nil {
		return s.writeError(ctx, err)
	}
	return ctx.Response.StatusCode()
}

func (s *Server) steps(ctx *fasthttp.RequestCtx, rt *route) error {
	if rt.drains && s.draining.Load() {
		ctx.SetConnectionClose()
		return errDraining
	}
	if rt.auth == authNone {
		s.dropBody(ctx)
		return rt.handle(ctx, nil)
	}
	p, err := s.admit(ctx, rt.auth)
	if err != nil {
		return err
	}
	// Only now, admitted, is a body worth reading.
	held, err := s.readBody(ctx)
	if err != nil {
		return err
	}
	defer s.releaseBody(ctx, held)
	return rt.handle(ctx, p)
}

// admit applies an auth mode to the request's headers and returns the
// principal of an API key, or the error to answer with. A request refused
// here never has its body read.
func (s *Server) admit(ctx *fasthttp.RequestCtx, mode authMode) (*principal, error) {
	switch mode {
	case authWebhook:
		h := &ctx.Request.Header
		if msg := s.webhookHeaderAuth(h, s.usesSignature(h)); msg != "" {
			return nil, s.authFailed(ctx, msg)
		}
	case authQuickDesk:
		if !quickdeskSignatureWellFormed(ctx.Request.Header.Peek(quickDeskSigHeader)) {
			return nil, s.authFailed(ctx, qdNoSignature)
		}
	case authKey, authWriteKey:
		p, err := s.authenticate(ctx)
		if err != nil {
			return nil, err
		}
		if mode == authWriteKey && p.readOnly {
			return nil, errReadOnlyKey
		}
		return p, nil
	}
	return nil, nil
}

// observe counts one answer of rt in the metrics of its kind.
func (s *Server) observe(rt *route, status int, start time.Time) {
	switch rt.metrics {
	case apiMetrics:
		if m := s.cfg.API; m != nil {
			m.Observe(rt.path, status, time.Since(start).Seconds())
		}
	case webhookMetrics:
		if w := s.cfg.Webhook; w != nil {
			w.Request(status)
			w.Duration.Observe(time.Since(start).Seconds())
		}
		s.console.request(status)
	}
}

func (s *Server) healthz(ctx *fasthttp.RequestCtx, _ *principal) error {
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"status":"ok"}`)
	return nil
}

// errStoreUnreachable is /readyz's answer to a failed Ready that gives no
// cause fit for clients.
var errStoreUnreachable = fleet.Errorf(fleet.EUNAVAILABLE, "the state store is unreachable")

// readyz answers 200 when the store answers within its timeout, else 503
// with Ready's message when it is an EUNAVAILABLE (the cause, without
// addresses), else a fixed one.
func (s *Server) readyz(ctx *fasthttp.RequestCtx, _ *principal) error {
	if s.cfg.Ready != nil {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := s.cfg.Ready(c); err != nil {
			if fleet.ErrorCode(err) == fleet.EUNAVAILABLE {
				return err
			}
			return errStoreUnreachable
		}
	}
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"status":"ready"}`)
	return nil
}

// serveMetrics is GET /metrics.
func (s *Server) serveMetrics(ctx *fasthttp.RequestCtx, _ *principal) error {
	s.cfg.Metrics(ctx)
	return nil
}
