package api

import (
	"bytes"
	"errors"
	"io"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/fleetd/fleetd/metrics"
	"github.com/valyala/fasthttp"
)

// Request bodies are read by fleetd's handlers, not by fasthttp, so that a
// request is refused from its headers before its body costs anything:
//
//   - The webhook reads its body only once the headers authenticate it: a
//     right x-webhook-secret, or plausible Standard Webhooks headers (the
//     signature itself is then verified over the body).
//   - The REST API reads a body only once the API key has resolved.
//   - POST /backend/webhook/quickdesk gets its body read here, before its
//     handler, only with a well-formed X-Webhook-Signature; its handler
//     verifies the HMAC.
//   - Every other route takes no body: it is never read.
//
// A request answered without reading the body it sent has its connection
// closed (the unread bytes must not be parsed as a next request), and is
// counted in fleetd_request_bodies_refused_total{reason="unread"}. The
// bodies read and held at once are bounded by Config.MaxInflightBodyBytes;
// past it a request is answered 503 with Retry-After before its body is
// read.

// Paths whose handlers read their body themselves (after authentication),
// or whose body the gate reads once the headers are plausible.
const (
	webhookPath   = "/backend/webhook"
	quickdeskPath = "/backend/webhook/quickdesk"
	apiPrefix     = "/api/v1/"
)

// bodyReadKey is the user value readBody sets once the body is read.
const bodyReadKey = "fleetd.bodyRead"

// StreamBodies configures hs so that fleetd's handler, not fasthttp, reads
// request bodies: with StreamRequestBody, and with at most one byte of a
// body read ahead before the handler runs (fasthttp's read-ahead is
// min(Content-Length, the request's body limit, 8 KiB); the per-request
// limit only sizes that read-ahead, the handler enforces
// Config.MaxBodyBytes). A client that sends "Expect: 100-continue" is
// answered from its headers before it is told to send the body, when they
// are enough to refuse it (see expect). hs.MaxRequestBodySize still
// applies to a server without StreamBodies.
func (s *Server) StreamBodies(hs *fasthttp.Server) {
	hs.StreamRequestBody = true
	hs.HeaderReceived = func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
		return fasthttp.RequestConfig{MaxRequestBodySize: 1}
	}
	hs.ExpectHandler = s.expect
}

// expect decides a request with "Expect: 100-continue" from its headers:
// a body over MaxBodyBytes (413), a webhook whose headers do not
// authenticate it (401, or 429 while throttled), a QuickDesk delivery
// without a well-formed signature (401) are answered at once, with the
// JSON error body and the connection closed; anything else is told to
// continue and goes through the handler. It returns the status.
func (s *Server) expect(ctx *fasthttp.RequestCtx) int {
	if ctx.Request.Header.ContentLength() > s.cfg.MaxBodyBytes {
		return s.refuseBody(ctx, metrics.BodyTooLarge)
	}
	if !ctx.IsPost() {
		return fasthttp.StatusContinue
	}
	switch string(ctx.Path()) {
	case webhookPath:
		h := &ctx.Request.Header
		if msg := s.webhookHeaderAuth(h, s.usesSignature(h)); msg != "" {
			code := s.refuseWebhook(ctx, msg)
			if w := s.cfg.Webhook; w != nil {
				w.Request(code)
			}
			return code
		}
	case quickdeskPath:
		if !quickdeskSignatureWellFormed(ctx.Request.Header.Peek("X-Webhook-Signature")) {
			return writeErrorBody(ctx, fasthttp.StatusUnauthorized, "unauthorized", "missing or malformed X-Webhook-Signature (want sha256=<hex HMAC-SHA256 of the body>)")
		}
	}
	return fasthttp.StatusContinue
}

// gate wraps the router: it decides, per route, whether and when a
// streamed body is read (see the comment at the top of this file).
func (s *Server) gate(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if ctx.RequestBodyStream() == nil {
			// Read by fasthttp already (a server without StreamBodies), or
			// a request without a body.
			next(ctx)
			return
		}
		path := ctx.Path()
		switch {
		case string(path) == webhookPath || bytes.HasPrefix(path, []byte(apiPrefix)):
			// Their handlers read the body once authenticated.
		case string(path) == quickdeskPath && ctx.IsPost() && quickdeskSignatureWellFormed(ctx.Request.Header.Peek("X-Webhook-Signature")):
			held, status := s.readBody(ctx)
			if status != 0 {
				return
			}
			defer s.releaseBody(ctx, held)
		default:
			// No handler may read the stream (a net/http handler behind
			// fasthttpadaptor, for one, would buffer it whole).
			ctx.Request.SetBodyRaw(nil)
		}
		next(ctx)
		if ctx.UserValue(bodyReadKey) == nil && ctx.Request.Header.ContentLength() != 0 {
			ctx.SetConnectionClose()
			if m := s.cfg.Limits; m != nil {
				m.BodyRefused(metrics.BodyUnread).Inc()
			}
		}
	}
}

// quickdeskSignatureWellFormed reports whether a QuickDesk delivery's
// X-Webhook-Signature is worth reading its body for: sha256= and 64 hex
// digits (QuickDesk sends lowercase; either case is the same signature).
// Its handler verifies the HMAC over the body; a delivery without it
// answers from its headers.
func quickdeskSignatureWellFormed(v []byte) bool {
	hex, ok := bytes.CutPrefix(v, []byte("sha256="))
	if !ok || len(hex) != 64 {
		return false
	}
	for _, c := range hex {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// heldBody is a body read by readBody: its pooled buffer and the bytes it
// holds of the in-flight budget.
type heldBody struct {
	buf      *[]byte
	reserved int64
}

// readBody reads the request body, when the server streams bodies, into a
// pooled buffer that ctx.PostBody then returns; without streaming the body
// is fasthttp's already. On failure it has answered the request, with the
// connection closed, and returns the status: 413 over MaxBodyBytes (from
// Content-Length when given), 503 + Retry-After when MaxInflightBodyBytes
// of bodies are held already, 400 when the body cannot be read. Call
// releaseBody with what it returns once the body is no longer used.
func (s *Server) readBody(ctx *fasthttp.RequestCtx) (heldBody, int) {
	stream := ctx.RequestBodyStream()
	if stream == nil {
		return heldBody{}, 0
	}
	ctx.SetUserValue(bodyReadKey, true)
	n := ctx.Request.Header.ContentLength()
	switch {
	case n == 0:
		ctx.Request.SetBodyRaw(nil)
		return heldBody{}, 0
	case n > s.cfg.MaxBodyBytes:
		return heldBody{}, s.refuseBody(ctx, metrics.BodyTooLarge)
	case n > 0:
		if !s.bodies.acquire(int64(n)) {
			return heldBody{}, s.refuseBody(ctx, metrics.BodyInFlightLimit)
		}
		h := heldBody{buf: bodyBuffers.get(n), reserved: int64(n)}
		if _, err := io.ReadFull(stream, *h.buf); err != nil {
			s.releaseBody(ctx, h)
			return heldBody{}, s.unreadable(ctx, err)
		}
		ctx.Request.SetBodyRaw(*h.buf)
		return h, 0
	}
	return s.readChunked(ctx, stream)
}

// readChunked reads a body of unknown length (chunked), reserving budget as
// its buffer doubles; at most MaxBodyBytes is reserved.
func (s *Server) readChunked(ctx *fasthttp.RequestCtx, stream io.Reader) (heldBody, int) {
	limit := s.cfg.MaxBodyBytes
	var h heldBody
	// grow moves the body into a buffer of size bytes (a power of two, so
	// its capacity is exactly that) and reserves what of it may be filled.
	grow := func(size int) bool {
		if !s.bodies.acquire(int64(min(size, limit)) - h.reserved) {
			return false
		}
		h.reserved = int64(min(size, limit))
		nb := bodyBuffers.get(size)
		if h.buf != nil {
			*nb = (*nb)[:copy(*nb, *h.buf)]
			bodyBuffers.put(h.buf)
		} else {
			*nb = (*nb)[:0]
		}
		h.buf = nb
		return true
	}
	if !grow(minBodyBuffer) {
		return heldBody{}, s.refuseBody(ctx, metrics.BodyInFlightLimit)
	}
	for {
		b := *h.buf
		if end := min(cap(b), limit); len(b) == end {
			if end == limit {
				// Full: one more byte means the body is over the limit.
				var one [1]byte
				n, err := io.ReadFull(stream, one[:])
				if n == 0 && errors.Is(err, io.EOF) {
					break
				}
				s.releaseBody(ctx, h)
				if n == 0 {
					return heldBody{}, s.unreadable(ctx, err)
				}
				return heldBody{}, s.refuseBody(ctx, metrics.BodyTooLarge)
			}
			if !grow(2 * cap(b)) {
				s.releaseBody(ctx, h)
				return heldBody{}, s.refuseBody(ctx, metrics.BodyInFlightLimit)
			}
			continue
		}
		n, err := stream.Read(b[len(b):min(cap(b), limit)])
		*h.buf = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.releaseBody(ctx, h)
			return heldBody{}, s.unreadable(ctx, err)
		}
	}
	ctx.Request.SetBodyRaw(*h.buf)
	return h, 0
}

// releaseBody gives back what readBody took; the request no longer has a
// body afterwards.
func (s *Server) releaseBody(ctx *fasthttp.RequestCtx, h heldBody) {
	if h.buf == nil {
		return
	}
	ctx.Request.SetBodyRaw(nil)
	bodyBuffers.put(h.buf)
	s.bodies.release(h.reserved)
}

// refuseBody answers a body that is not read: 413 or 503, connection
// closed.
func (s *Server) refuseBody(ctx *fasthttp.RequestCtx, reason string) int {
	ctx.SetConnectionClose()
	if m := s.cfg.Limits; m != nil {
		m.BodyRefused(reason).Inc()
	}
	if reason == metrics.BodyTooLarge {
		return writeErrorBody(ctx, fasthttp.StatusRequestEntityTooLarge, "payload_too_large", "request body exceeds the size limit")
	}
	return writeErrorBody(ctx, fasthttp.StatusServiceUnavailable, "unavailable", "fleetd holds as many request bodies as it may (--max-inflight-body-bytes); retry later")
}

// unreadable answers a body that broke off (timeout, reset, bad chunk).
func (s *Server) unreadable(ctx *fasthttp.RequestCtx, err error) int {
	s.log.Debug("request body could not be read", "err", err)
	ctx.SetConnectionClose()
	return writeErrorBody(ctx, fasthttp.StatusBadRequest, "invalid_request", "the request body could not be read")
}

// bodyBudget counts the bytes of request bodies held, up to limit (0: no
// limit). Safe for concurrent use.
type bodyBudget struct {
	limit int64
	used  atomic.Int64
	gauge interface{ Add(float64) } // nil: not exported
}

func (b *bodyBudget) acquire(n int64) bool {
	for {
		u := b.used.Load()
		if b.limit > 0 && u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			break
		}
	}
	if b.gauge != nil {
		b.gauge.Add(float64(n))
	}
	return true
}

func (b *bodyBudget) release(n int64) {
	b.used.Add(-n)
	if b.gauge != nil {
		b.gauge.Add(-float64(n))
	}
}

// Body buffers are pooled by size class, powers of two from minBodyBuffer
// to maxPooledBody; larger ones are allocated per request.
const (
	minBodyBuffer = 4 << 10
	maxPooledBody = 64 << 20
	minClassBits  = 12 // log2(minBodyBuffer)
	numClasses    = 26 - minClassBits + 1
)

type bufferPool [numClasses]sync.Pool

var bodyBuffers bufferPool

// classOf returns the size class that holds n bytes.
func classOf(n int) int {
	if n <= minBodyBuffer {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassBits
}

// get returns a buffer of length n.
func (p *bufferPool) get(n int) *[]byte {
	c := classOf(n)
	if c >= numClasses {
		b := make([]byte, n)
		return &b
	}
	if v, ok := p[c].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, 1<<(c+minClassBits))
	return &b
}

// put returns b to its class; buffers not from the pool are dropped.
func (p *bufferPool) put(b *[]byte) {
	c := classOf(cap(*b))
	if c < numClasses && cap(*b) == 1<<(c+minClassBits) {
		p[c].Put(b)
	}
}
