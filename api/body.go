package api

import (
	"bytes"
	"errors"
	"io"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/metrics"
	"github.com/valyala/fasthttp"
)

// Request bodies are read by fleetd's request pipeline (routes.go), not by
// fasthttp, so that a request is refused from its headers before its body
// costs anything. A route reads its body only once its auth mode admits it:
//
//   - The webhook: a right x-webhook-secret, or plausible Standard Webhooks
//     headers (the signature itself is then verified over the body).
//   - POST /backend/webhook/quickdesk: a well-formed X-Webhook-Signature
//     (its handler verifies the HMAC over the body).
//   - The REST API: an API key that has resolved.
//   - Every other route takes no body: it is never read.
//
// A request answered without reading the body it sent has its connection
// closed (the unread bytes must not be parsed as a next request), and is
// counted in fleetd_request_bodies_refused_total{reason="unread"}. The
// bodies read and held at once are bounded by Config.MaxInflightBodyBytes;
// past it a request is answered 503 with Retry-After before its body is
// read.

// The paths of the webhooks.
const (
	webhookPath   = "/backend/webhook"
	quickdeskPath = "/backend/webhook/quickdesk"
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
// authenticate it (401, or 429 while throttled) are answered at once, with
// the JSON error body and the connection closed; anything else is told to
// continue and goes through the pipeline. It returns the status.
func (s *Server) expect(ctx *fasthttp.RequestCtx) int {
	if ctx.Request.Header.ContentLength() > s.cfg.MaxBodyBytes {
		return s.writeError(ctx, s.refuseBody(ctx, metrics.BodyTooLarge))
	}
	if !ctx.IsPost() {
		return fasthttp.StatusContinue
	}
	mode, ok := s.headerAuth[string(ctx.Path())]
	if !ok {
		return fasthttp.StatusContinue
	}
	if _, err := s.admit(ctx, mode); err != nil {
		code := s.writeError(ctx, err)
		if w := s.cfg.Webhook; w != nil {
			w.Request(code)
		}
		return code
	}
	return fasthttp.StatusContinue
}

// gate wraps the router: a request whose streamed body no route read has
// its connection closed, since the unread bytes must not be parsed as a
// next request (see the comment at the top of this file).
func (s *Server) gate(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		// Without a stream, the body was read by fasthttp already (a server
		// without StreamBodies), or there is none.
		streamed := ctx.RequestBodyStream() != nil
		next(ctx)
		if streamed && ctx.UserValue(bodyReadKey) == nil && ctx.Request.Header.ContentLength() != 0 {
			ctx.SetConnectionClose()
			if m := s.cfg.Limits; m != nil {
				m.BodyRefused(metrics.BodyUnread).Inc()
			}
		}
	}
}

// dropBody makes sure a route that takes no body cannot read its stream (a
// net/http handler behind fasthttpadaptor, for one, would buffer it whole).
func (s *Server) dropBody(ctx *fasthttp.RequestCtx) {
	if ctx.RequestBodyStream() != nil {
		ctx.Request.SetBodyRaw(nil)
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
// is fasthttp's already. On failure it has closed the connection and
// returns the error to answer: ETOOLARGE over MaxBodyBytes (from
// Content-Length when given), EUNAVAILABLE when MaxInflightBodyBytes of
// bodies are held already, EINVALID when the body cannot be read. Call
// releaseBody with what it returns once the body is no longer used.
func (s *Server) readBody(ctx *fasthttp.RequestCtx) (heldBody, error) {
	stream := ctx.RequestBodyStream()
	if stream == nil {
		return heldBody{}, nil
	}
	ctx.SetUserValue(bodyReadKey, true)
	n := ctx.Request.Header.ContentLength()
	switch {
	case n == 0:
		ctx.Request.SetBodyRaw(nil)
		return heldBody{}, nil
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
		return h, nil
	}
	return s.readChunked(ctx, stream)
}

// readChunked reads a body of unknown length (chunked), reserving budget as
// its buffer doubles; at most MaxBodyBytes is reserved.
func (s *Server) readChunked(ctx *fasthttp.RequestCtx, stream io.Reader) (heldBody, error) {
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
	return h, nil
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

// Answers of a body that is not read.
var (
	errBodiesInFlight = fleet.Errorf(fleet.EUNAVAILABLE, "fleetd holds as many request bodies as it may (--max-inflight-body-bytes); retry later")
	errBodyUnreadable = fleet.Errorf(fleet.EINVALID, "the request body could not be read")
)

// refuseBody closes the connection of a body that is not read, counts it
// and returns its error: too large (413) or too many bodies held (503).
func (s *Server) refuseBody(ctx *fasthttp.RequestCtx, reason string) error {
	ctx.SetConnectionClose()
	if m := s.cfg.Limits; m != nil {
		m.BodyRefused(reason).Inc()
	}
	if reason == metrics.BodyTooLarge {
		return errBodyTooLarge
	}
	return errBodiesInFlight
}

// unreadable closes the connection of a body that broke off (timeout,
// reset, bad chunk) and returns its error.
func (s *Server) unreadable(ctx *fasthttp.RequestCtx, err error) error {
	s.log.Debug("request body could not be read", "err", err)
	ctx.SetConnectionClose()
	return errBodyUnreadable
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
