package api

import (
	"context"
	"fmt"
	"time"

	"github.com/fasthttp/router"
	"github.com/fleetd/fleetd/fleet"
	"github.com/valyala/fasthttp"
)

// routes registers every route of fleetd. It is the one place that lists
// them; the OpenAPI test walks this router.
func (s *Server) routes() fasthttp.RequestHandler {
	r := s.router()
	return r.Handler
}

// router builds the router. Every REST route goes through s.api with its
// own template spelled out, so metric labels never depend on the raw path;
// auth is false only for the OpenAPI document, which SPEC §4 makes public.
func (s *Server) router() *router.Router {
	r := router.New()
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = true
	// OPTIONS on a known path answers 204 with Allow (RFC 9110), without
	// authentication: it reveals only the methods.
	r.HandleOPTIONS = true
	r.GlobalOPTIONS = func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusNoContent) }

	r.POST("/backend/webhook", s.recorded(s.webhook))
	r.POST("/backend/webhook/quickdesk", s.recorded(s.quickdesk))
	s.consoleRoutes(r)
	// HEAD answers like GET without a body (fasthttp skips it for HEAD).
	r.GET("/healthz", s.healthz)
	r.HEAD("/healthz", s.healthz)
	r.GET("/readyz", s.readyz)
	r.HEAD("/readyz", s.readyz)
	if s.cfg.Metrics != nil {
		r.GET("/metrics", s.cfg.Metrics)
	}

	r.GET("/api/openapi.json", s.api("/api/openapi.json", false, s.openapi))
	r.GET("/api/v1/devices", s.api("/api/v1/devices", true, s.listDevices))
	r.GET("/api/v1/devices/{id}", s.api("/api/v1/devices/{id}", true, s.getDevice))
	r.POST("/api/v1/devices/{id}/unbind", s.api("/api/v1/devices/{id}/unbind", true, s.unbindDevice))
	r.POST("/api/v1/devices/{id}/secret:rotate", s.api("/api/v1/devices/{id}/secret:rotate", true, s.rotateSecret))
	r.GET("/api/v1/sessions", s.api("/api/v1/sessions", true, s.listSessions))
	r.GET("/api/v1/usage", s.api("/api/v1/usage", true, s.usage))
	r.GET("/api/v1/members", s.api("/api/v1/members", true, s.listMembers))
	r.POST("/api/v1/members:invite", s.api("/api/v1/members:invite", true, s.inviteMember))

	r.NotFound = func(ctx *fasthttp.RequestCtx) {
		writeErrorBody(ctx, fasthttp.StatusNotFound, "not_found", fmt.Sprintf("no route for %s %s", ctx.Method(), ctx.Path()))
	}
	r.MethodNotAllowed = func(ctx *fasthttp.RequestCtx) {
		writeErrorBody(ctx, fasthttp.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s is not allowed on %s", ctx.Method(), ctx.Path()))
	}
	r.PanicHandler = func(ctx *fasthttp.RequestCtx, v any) {
		s.log.Error("panic in handler", "path", string(ctx.Path()), "panic", fmt.Sprint(v))
		ctx.Response.Reset()
		writeErrorBody(ctx, fasthttp.StatusInternalServerError, "internal", "internal error")
	}
	return r
}

func (s *Server) healthz(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"status":"ok"}`)
}

// readyz answers 200 when the store answers within its timeout, else 503
// with Ready's message when it is a fleet error (the cause, without
// addresses), else a fixed one.
func (s *Server) readyz(ctx *fasthttp.RequestCtx) {
	if s.draining.Load() {
		ctx.SetConnectionClose()
		writeErrorBody(ctx, fasthttp.StatusServiceUnavailable, "unavailable", "fleetd is shutting down")
		return
	}
	if s.cfg.Ready != nil {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := s.cfg.Ready(c); err != nil {
			msg := "the state store is unreachable"
			if fleet.ErrorCode(err) == fleet.EUNAVAILABLE {
				msg = fleet.ErrorMessage(err)
			}
			writeErrorBody(ctx, fasthttp.StatusServiceUnavailable, "unavailable", msg)
			return
		}
	}
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"status":"ready"}`)
}
