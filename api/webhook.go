package api

import (
	"context"
	"crypto/subtle"
	"strconv"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/ingest"
	"github.com/valyala/fasthttp"
)

// webhook is POST /backend/webhook, admitted from its headers (authWebhook).
func (s *Server) webhook(ctx *fasthttp.RequestCtx, _ *principal) error {
	var deliveryID string
	if h := &ctx.Request.Header; s.usesSignature(h) {
		// Plausible signature headers got the body read even from a client
		// the throttle blocks: a valid sender behind the address of an
		// attacker is never refused for the attacker's failures. The
		// in-flight body bound caps what forged signatures can make fleetd
		// hold.
		id, err := verifySignature(h, ctx.PostBody(), s.signing, s.now())
		if err != nil {
			return s.authFailed(ctx, err.Error())
		}
		deliveryID = id
	}
	// The events outlive this handler when the commit times out (the
	// batcher still holds them), and fasthttp reuses the body buffer, so
	// decode from a copy that the events own.
	body := append([]byte(nil), ctx.PostBody()...)
	events, err := ingest.DecodeDelivery(body, deliveryID, s.now(), s.cfg.MaxBatch)
	w := s.cfg.Webhook
	if err != nil {
		if w != nil {
			for i := range events {
				w.Event(events[i].Type, fleet.Invalid)
			}
		}
		return err
	}
	results := make([]fleet.Result, len(events))
	if err := s.commit(events, results); err != nil {
		if err != errNotCommitted {
			s.refusals.warn(s.log, httpStatus(err), err)
		}
		return err
	}
	var counts [fleet.NumResults]int
	for i, r := range results {
		counts[r]++
		if w != nil {
			w.Event(events[i].Type, r)
		}
	}
	writeCounts(ctx, &counts)
	return nil
}

// errNotCommitted answers a commit that failed with a store fault that is
// not a plain outage: still not the client's fault, so a retry is asked
// for.
var errNotCommitted = fleet.Errorf(fleet.EUNAVAILABLE, "the events could not be committed, retry later")

// commit submits the events of one webhook request for a group commit,
// within IngestTimeout, and returns once results holds their outcomes or
// with the error to answer. Internal errors are logged and become
// errNotCommitted.
func (s *Server) commit(events []fleet.Event, results []fleet.Result) error {
	cctx, cancel := context.WithTimeout(context.Background(), s.cfg.IngestTimeout)
	err := s.cfg.Ingest.Submit(cctx, events, results)
	cancel()
	if err != nil && fleet.ErrorCode(err) == fleet.EINTERNAL {
		s.log.Error("webhook commit failed", "err", err)
		return errNotCommitted
	}
	return err
}

// writeCounts answers 200 with the per-result counts of SPEC §3.
func writeCounts(ctx *fasthttp.RequestCtx, counts *[fleet.NumResults]int) {
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
}

// usesSignature reports whether the request is authenticated by a
// Standard Webhooks signature (else by x-webhook-secret).
func (s *Server) usesSignature(h *fasthttp.RequestHeader) bool {
	return s.cfg.WebhookAuth == AuthSignature ||
		s.cfg.WebhookAuth == AuthAny && len(h.Peek("webhook-signature")) > 0
}

// webhookHeaderAuth applies the configured mode to what the headers alone
// can tell, and returns the reason for a 401, or "". With a shared secret
// that is the whole check; a signature is verified over the body later.
func (s *Server) webhookHeaderAuth(h *fasthttp.RequestHeader, useSig bool) string {
	if useSig {
		if _, _, _, err := signatureHeaders(h, s.now()); err != nil {
			return err.Error()
		}
		return ""
	}
	if !s.secretMatches(h.Peek("x-webhook-secret")) {
		if s.cfg.WebhookAuth == AuthAny {
			return "missing or wrong x-webhook-secret or webhook-signature"
		}
		return "missing or wrong x-webhook-secret"
	}
	return ""
}

// secretMatches compares got with every configured secret in constant
// time; all of them are compared, so timing tells neither which one
// matched nor how much of it.
func (s *Server) secretMatches(got []byte) bool {
	ok := 0
	for _, want := range s.secrets {
		ok |= subtle.ConstantTimeCompare(got, want)
	}
	return ok == 1 && len(got) > 0
}
