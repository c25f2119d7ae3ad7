package api

import (
	_ "embed"

	"github.com/valyala/fasthttp"
)

// openapiDoc is the OpenAPI 3 description of every route. It is a file
// rather than generated so reviewers read the contract as clients do;
// TestOpenAPIMatchesRouter keeps it and the router in step, and the
// end-to-end tests validate real replies against its schemas.
//
//go:embed openapi.json
var openapiDoc []byte

// openapi is GET /api/openapi.json.
func (s *Server) openapi(ctx *fasthttp.RequestCtx, _ *principal) error {
	ctx.Response.Header.Set("Cache-Control", "public, max-age=300")
	writeJSON(ctx, fasthttp.StatusOK, openapiDoc)
	return nil
}
