package api

import (
	"encoding/json"
	"strconv"

	"github.com/fleetd/fleetd/fleet"
	"github.com/valyala/fasthttp"
)

// retryAfterSeconds is what fleetd asks clients to wait after a 429 or 503.
const retryAfterSeconds = 1

// statusOf maps a fleet error code to an HTTP status and the snake_case
// error name of the JSON body.
func statusOf(code string) (int, string) {
	switch code {
	case fleet.EINVALID:
		return fasthttp.StatusBadRequest, "invalid_request"
	case fleet.ENOTFOUND:
		return fasthttp.StatusNotFound, "not_found"
	case fleet.ECONFLICT:
		return fasthttp.StatusConflict, "conflict"
	case fleet.EFORBIDDEN:
		return fasthttp.StatusForbidden, "forbidden"
	case fleet.EUNAUTHORIZED:
		return fasthttp.StatusUnauthorized, "unauthorized"
	case fleet.EUNAVAILABLE:
		return fasthttp.StatusServiceUnavailable, "unavailable"
	case fleet.EOVERLOADED:
		return fasthttp.StatusTooManyRequests, "rate_limited"
	default:
		return fasthttp.StatusInternalServerError, "internal"
	}
}

// writeError answers with the JSON error body of err and returns the status.
// Internal errors are logged with detail by the caller's logger, never sent.
func (s *Server) writeError(ctx *fasthttp.RequestCtx, err error) int {
	status, name := statusOf(fleet.ErrorCode(err))
	if status == fasthttp.StatusInternalServerError {
		s.log.Error("internal error", "path", string(ctx.Path()), "err", err)
	}
	return writeErrorBody(ctx, status, name, fleet.ErrorMessage(err))
}

// writeErrorBody writes {"error","status","message"} with the given status;
// 429 and 503 carry Retry-After.
func writeErrorBody(ctx *fasthttp.RequestCtx, status int, name, msg string) int {
	return writeErrorBodyRetry(ctx, status, name, msg, retryAfterSeconds)
}

// writeErrorBodyRetry is writeErrorBody with the Retry-After of a 429/503.
func writeErrorBodyRetry(ctx *fasthttp.RequestCtx, status int, name, msg string, retryAfter int) int {
	if status == fasthttp.StatusTooManyRequests || status == fasthttp.StatusServiceUnavailable {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	m, _ := json.Marshal(msg)
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b := ctx.Response.BodyWriter()
	ctx.Response.ResetBody()
	buf := make([]byte, 0, 64+len(name)+len(m))
	buf = append(buf, `{"error":"`...)
	buf = append(buf, name...)
	buf = append(buf, `","status":`...)
	buf = strconv.AppendInt(buf, int64(status), 10)
	buf = append(buf, `,"message":`...)
	buf = append(buf, m...)
	buf = append(buf, '}')
	b.Write(buf)
	return status
}

// RawErrorResponse is the whole HTTP/1.1 response, Connection: close, for
// err answered outside any handler: a connection refused at the connection
// limit gets the same JSON body and Retry-After as every other error.
func RawErrorResponse(err error) []byte {
	var ctx fasthttp.RequestCtx
	status, name := statusOf(fleet.ErrorCode(err))
	writeErrorBody(&ctx, status, name, fleet.ErrorMessage(err))
	ctx.Response.SetConnectionClose()
	return []byte(ctx.Response.String())
}
