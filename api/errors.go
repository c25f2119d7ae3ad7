package api

import (
	"encoding/json"
	"errors"
	"strconv"

	"github.com/fleetd/fleetd/fleet"
	"github.com/valyala/fasthttp"
)

// retryAfterSeconds is what fleetd asks clients to wait after a 429 or 503,
// unless the error says otherwise (retryAfter).
const retryAfterSeconds = 1

// errorKind is how an error code is answered: the HTTP status and the
// snake_case error name of the JSON body (SPEC §4).
type errorKind struct {
	status int
	name   string
}

// codeHeadersTooLarge is the one code that is HTTP's alone: request headers
// over fasthttp's buffer, answered by ErrorHandler.
const codeHeadersTooLarge = "headers_too_large"

// errorTable is the one place where error codes become answers. The
// message of the body is the error's (fleet.ErrorMessage: "internal error"
// for anything that is not a *fleet.Error, so internals never reach a
// client). A code it lacks is answered as internal.
var errorTable = map[string]errorKind{
	fleet.EINVALID:      {fasthttp.StatusBadRequest, "invalid_request"},
	fleet.EUNAUTHORIZED: {fasthttp.StatusUnauthorized, "unauthorized"},
	fleet.EFORBIDDEN:    {fasthttp.StatusForbidden, "forbidden"},
	fleet.ENOTFOUND:     {fasthttp.StatusNotFound, "not_found"},
	fleet.ENOTALLOWED:   {fasthttp.StatusMethodNotAllowed, "method_not_allowed"},
	fleet.ECONFLICT:     {fasthttp.StatusConflict, "conflict"},
	fleet.ETOOLARGE:     {fasthttp.StatusRequestEntityTooLarge, "payload_too_large"},
	codeHeadersTooLarge: {fasthttp.StatusRequestHeaderFieldsTooLarge, "invalid_request"},
	fleet.EOVERLOADED:   {fasthttp.StatusTooManyRequests, "rate_limited"},
	fleet.EINTERNAL:     {fasthttp.StatusInternalServerError, "internal"},
	fleet.EUNAVAILABLE:  {fasthttp.StatusServiceUnavailable, "unavailable"},
}

// kindOf returns the answer of an error code.
func kindOf(code string) errorKind {
	if k, ok := errorTable[code]; ok {
		return k
	}
	return errorTable[fleet.EINTERNAL]
}

// httpStatus is the status err is answered with.
func httpStatus(err error) int { return kindOf(fleet.ErrorCode(err)).status }

// retryAfter asks for another Retry-After than retryAfterSeconds on the 429
// or 503 of the error it wraps.
type retryAfter struct {
	error
	seconds int
}

func (r *retryAfter) Unwrap() error { return r.error }

// withRetryAfter wraps err so that its answer carries Retry-After: seconds.
func withRetryAfter(err error, seconds int) error { return &retryAfter{err, seconds} }

// errInternal answers what must not be explained to the client (a panic).
var errInternal = &fleet.Error{Code: fleet.EINTERNAL, Message: "internal error"}

// writeError answers with the JSON error body of err and returns the
// status. Internal errors are logged with detail, never sent.
func (s *Server) writeError(ctx *fasthttp.RequestCtx, err error) int {
	if httpStatus(err) == fasthttp.StatusInternalServerError {
		s.log.Error("internal error", "path", string(ctx.Path()), "err", err)
	}
	return writeErrorBody(ctx, err)
}

// writeErrorBody writes {"error","status","message"} for err with the
// status of its code; 429 and 503 carry Retry-After.
func writeErrorBody(ctx *fasthttp.RequestCtx, err error) int {
	k := kindOf(fleet.ErrorCode(err))
	if k.status == fasthttp.StatusTooManyRequests || k.status == fasthttp.StatusServiceUnavailable {
		secs := retryAfterSeconds
		var ra *retryAfter
		if errors.As(err, &ra) {
			secs = ra.seconds
		}
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(secs))
	}
	m, _ := json.Marshal(fleet.ErrorMessage(err))
	ctx.SetStatusCode(k.status)
	ctx.SetContentType("application/json")
	b := ctx.Response.BodyWriter()
	ctx.Response.ResetBody()
	buf := make([]byte, 0, 64+len(k.name)+len(m))
	buf = append(buf, `{"error":"`...)
	buf = append(buf, k.name...)
	buf = append(buf, `","status":`...)
	buf = strconv.AppendInt(buf, int64(k.status), 10)
	buf = append(buf, `,"message":`...)
	buf = append(buf, m...)
	buf = append(buf, '}')
	b.Write(buf)
	return k.status
}

// RawErrorResponse is the whole HTTP/1.1 response, Connection: close, for
// err answered outside any handler: a connection refused at the connection
// limit gets the same JSON body and Retry-After as every other error.
func RawErrorResponse(err error) []byte {
	var ctx fasthttp.RequestCtx
	writeErrorBody(&ctx, err)
	ctx.Response.SetConnectionClose()
	return []byte(ctx.Response.String())
}

// Errors of requests that fasthttp refuses before routing.
var (
	errBodyTooLarge    = fleet.Errorf(fleet.ETOOLARGE, "request body exceeds the size limit")
	errHeadersTooLarge = fleet.Errorf(codeHeadersTooLarge, "request headers are too large")
	errMalformed       = fleet.Errorf(fleet.EINVALID, "malformed HTTP request")
)

// ErrorHandler answers requests that fasthttp rejects before routing (body
// too large, malformed request) with the JSON error body.
func ErrorHandler(ctx *fasthttp.RequestCtx, err error) {
	ctx.SetConnectionClose()
	var small *fasthttp.ErrSmallBuffer
	switch {
	case err == fasthttp.ErrBodyTooLarge:
		writeErrorBody(ctx, errBodyTooLarge)
	case errors.As(err, &small):
		writeErrorBody(ctx, errHeadersTooLarge)
	default:
		writeErrorBody(ctx, errMalformed)
	}
}
