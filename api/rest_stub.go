package api

import (
	"time"

	"github.com/valyala/fasthttp"
)

// Placeholder handlers until the REST API lands; this file is replaced.

type keyCache struct{}

func newKeyCache(time.Duration) *keyCache { return &keyCache{} }

func (s *Server) api(route string, auth bool, h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return h
}

func (s *Server) notImplemented(ctx *fasthttp.RequestCtx) {
	writeErrorBody(ctx, fasthttp.StatusNotImplemented, "internal", "not implemented")
}

func (s *Server) openapi(ctx *fasthttp.RequestCtx)      { s.notImplemented(ctx) }
func (s *Server) listDevices(ctx *fasthttp.RequestCtx)  { s.notImplemented(ctx) }
func (s *Server) getDevice(ctx *fasthttp.RequestCtx)    { s.notImplemented(ctx) }
func (s *Server) unbindDevice(ctx *fasthttp.RequestCtx) { s.notImplemented(ctx) }
func (s *Server) rotateSecret(ctx *fasthttp.RequestCtx) { s.notImplemented(ctx) }
func (s *Server) listSessions(ctx *fasthttp.RequestCtx) { s.notImplemented(ctx) }
func (s *Server) usage(ctx *fasthttp.RequestCtx)        { s.notImplemented(ctx) }
func (s *Server) listMembers(ctx *fasthttp.RequestCtx)  { s.notImplemented(ctx) }
func (s *Server) inviteMember(ctx *fasthttp.RequestCtx) { s.notImplemented(ctx) }
