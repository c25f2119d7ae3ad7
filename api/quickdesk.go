package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/ingest"
	"github.com/valyala/fasthttp"
)

// quickDeskSigPrefix starts QuickDesk's X-Webhook-Signature value; the
// lowercase hex of an HMAC-SHA256 follows.
const quickDeskSigPrefix = "sha256="

// quickdesk is POST /backend/webhook/quickdesk: QuickDesk's own webhook
// deliveries (SPEC §3b), one envelope per request, signed with a shared
// secret of --webhook-secret. They go through the same batcher and store
// as the main webhook, and count in the same metrics.
func (s *Server) quickdesk(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	code := s.serveQuickDesk(ctx)
	if w := s.cfg.Webhook; w != nil {
		w.Request(code)
		w.Duration.Observe(time.Since(start).Seconds())
	}
}

func (s *Server) serveQuickDesk(ctx *fasthttp.RequestCtx) int {
	if s.draining.Load() {
		ctx.SetConnectionClose()
		return s.writeError(ctx, ingest.ErrClosed)
	}
	if msg := s.verifyQuickDesk(ctx.Request.Header.Peek("X-Webhook-Signature"), ctx.PostBody()); msg != "" {
		src := s.source(ctx)
		if code, ok := s.throttled(ctx, src); ok {
			return code
		}
		s.throttle.Fail(src)
		return writeErrorBody(ctx, fasthttp.StatusUnauthorized, "unauthorized", msg)
	}
	// As for the main webhook, the event outlives this handler when the
	// commit times out, so it is decoded from a copy that it owns.
	body := append([]byte(nil), ctx.PostBody()...)
	q, err := ingest.DecodeQuickDesk(body, s.now())
	w := s.cfg.Webhook
	if err != nil {
		if w != nil && q.Name != "" {
			w.EventNamed(q.Name, fleet.Invalid)
		}
		return s.writeError(ctx, err)
	}
	var counts [fleet.NumResults]int
	if q.Event.Type == fleet.EventUnknown {
		// Nothing to commit: acknowledged without a store round trip.
		counts[fleet.Ignored] = 1
		if w != nil {
			w.EventNamed(q.Name, fleet.Ignored)
		}
		s.console.events(1)
		return writeCounts(ctx, &counts)
	}
	events := []fleet.Event{q.Event}
	results := make([]fleet.Result, 1)
	cctx, cancel := context.WithTimeout(context.Background(), s.cfg.IngestTimeout)
	err = s.cfg.Ingest.Submit(cctx, events, results)
	cancel()
	if err != nil {
		s.log.Debug("quickdesk delivery not committed", "err", err)
		if fleet.ErrorCode(err) == fleet.EINTERNAL {
			s.log.Error("quickdesk commit failed", "err", err)
			return writeErrorBody(ctx, fasthttp.StatusServiceUnavailable, "unavailable", "the event could not be committed, retry later")
		}
		return s.writeError(ctx, err)
	}
	counts[results[0]]++
	if w != nil {
		w.Event(q.Event.Type, results[0])
	}
	return writeCounts(ctx, &counts)
}

// Reasons of a refused QuickDesk delivery.
const (
	qdNoSignature  = "missing or malformed X-Webhook-Signature (want sha256=<hex HMAC-SHA256 of the body>)"
	qdBadSignature = "X-Webhook-Signature does not match the body with any shared webhook secret"
	qdNoSecret     = "no shared webhook secret is configured (--webhook-secret has only whsec_ keys), so no QuickDesk delivery can be verified"
)

// verifyQuickDesk checks X-Webhook-Signature against the HMAC-SHA256 of
// the raw body with every shared secret, and returns the reason for a 401
// or "". Every secret is tried and compared in constant time, so timing
// tells neither which one matched nor how much of the signature did.
// whsec_ entries are Standard Webhooks keys and never sign these.
func (s *Server) verifyQuickDesk(header, body []byte) string {
	hexSig, ok := bytes.CutPrefix(header, []byte(quickDeskSigPrefix))
	var got [sha256.Size]byte
	if !ok || len(hexSig) != 2*sha256.Size {
		return qdNoSignature
	}
	if _, err := hex.Decode(got[:], hexSig); err != nil {
		return qdNoSignature
	}
	if len(s.secrets) == 0 {
		return qdNoSecret
	}
	var want [sha256.Size]byte
	match := false
	for _, key := range s.secrets {
		m := hmac.New(sha256.New, key)
		m.Write(body)
		if hmac.Equal(m.Sum(want[:0]), got[:]) {
			match = true
		}
	}
	if !match {
		return qdBadSignature
	}
	return ""
}

// writeCounts answers 200 with the per-result counts of SPEC §3.
func writeCounts(ctx *fasthttp.RequestCtx, counts *[fleet.NumResults]int) int {
	buf := make([]byte, 0, 80)
	buf = append(buf, `{"accepted":`...)
	buf = strconv.AppendInt(buf, int64(counts[fleet.Accepted]), 10)
	buf = append(buf, `,"duplicate":`...)
	buf = strconv.AppendInt(buf, int64(counts[fleet.Duplicate]), 10)
	buf = append(buf, `,"stale":`...)
	buf = strconv.AppendInt(buf, int64(counts[fleet.Stale]), 10)
	buf = append(buf, `,"ignored":`...)
	buf = strconv.AppendInt(buf, int64(counts[fleet.Ignored]), 10)
	buf = append(buf, '}')
	writeJSON(ctx, fasthttp.StatusOK, buf)
	return fasthttp.StatusOK
}
