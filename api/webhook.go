package api

import (
	"context"
	"crypto/subtle"
	"strconv"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/ingest"
	"github.com/valyala/fasthttp"
)

// webhook is POST /backend/webhook.
func (s *Server) webhook(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	code := s.serveWebhook(ctx)
	if w := s.cfg.Webhook; w != nil {
		w.Request(code)
		w.Duration.Observe(time.Since(start).Seconds())
	}
}

func (s *Server) serveWebhook(ctx *fasthttp.RequestCtx) int {
	if s.draining.Load() {
		ctx.SetConnectionClose()
		return s.writeError(ctx, ingest.ErrClosed)
	}
	// Authenticate from the headers first: a request refused here never
	// has its body read (the gate then closes the connection).
	h := &ctx.Request.Header
	useSig := s.usesSignature(h)
	if msg := s.webhookHeaderAuth(h, useSig); msg != "" {
		return s.refuseWebhook(ctx, msg)
	}
	// A signature is verified over the body, so plausible signature
	// headers get it read even from a client the throttle blocks: a valid
	// sender behind the address of an attacker is never refused for the
	// attacker's failures. The in-flight body bound caps what forged
	// signatures can make fleetd hold.
	held, status := s.readBody(ctx)
	if status != 0 {
		return status
	}
	defer s.releaseBody(ctx, held)
	var deliveryID string
	if useSig {
		id, err := verifySignature(h, ctx.PostBody(), s.signing, s.now())
		if err != nil {
			return s.refuseWebhook(ctx, err.Error())
		}
		deliveryID = id
	}
	if deliveryID != "" && !fleet.ValidID(deliveryID) {
		return writeErrorBody(ctx, fasthttp.StatusBadRequest, "invalid_request", "webhook-id must be 1-128 characters of [A-Za-z0-9._:@-]")
	}
	// The events outlive this handler when the commit times out (the
	// batcher still holds them), and fasthttp reuses the body buffer, so
	// decode from a copy that the events own.
	body := append([]byte(nil), ctx.PostBody()...)
	events, err := ingest.Decode(body, make([]fleet.Event, 0, eventsHint(body, s.cfg.MaxBatch)), s.now(), s.cfg.MaxBatch)
	if err == nil && deliveryID != "" {
		err = assignDeliveryIDs(events, deliveryID)
	}
	if err != nil {
		if w := s.cfg.Webhook; w != nil {
			for i := range events {
				w.Event(events[i].Type, fleet.Invalid)
			}
		}
		return s.writeError(ctx, err)
	}
	results := make([]fleet.Result, len(events))
	cctx, cancel := context.WithTimeout(context.Background(), s.cfg.IngestTimeout)
	err = s.cfg.Ingest.Submit(cctx, events, results)
	cancel()
	if err != nil {
		if fleet.ErrorCode(err) == fleet.EINTERNAL {
			// A store fault that is not a plain outage: still a fault,
			// not the client's; ask for a retry.
			s.log.Error("webhook commit failed", "err", err)
			return writeErrorBody(ctx, fasthttp.StatusServiceUnavailable, "unavailable", "the events could not be committed, retry later")
		}
		code := s.writeError(ctx, err)
		s.refusals.warn(s.log, code, err)
		return code
	}
	var counts [fleet.NumResults]int
	w := s.cfg.Webhook
	for i, r := range results {
		counts[r]++
		if w != nil {
			w.Event(events[i].Type, r)
		}
	}
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
	ctx.SetContentType("application/json")
	ctx.SetBody(buf)
	return fasthttp.StatusOK
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

// refuseWebhook answers a failed authentication: 429 while the client is
// throttled, else 401, counted as a failure.
func (s *Server) refuseWebhook(ctx *fasthttp.RequestCtx, msg string) int {
	src := s.source(ctx)
	if code, ok := s.throttled(ctx, src); ok {
		return code
	}
	s.throttle.Fail(src)
	return writeErrorBody(ctx, fasthttp.StatusUnauthorized, "unauthorized", msg)
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

// assignDeliveryIDs gives events without an id the signed delivery id: the
// webhook-id itself for a single event, "<webhook-id>:<i>" in a batch.
func assignDeliveryIDs(events []fleet.Event, id string) error {
	if len(events) == 1 {
		if events[0].ID == "" {
			events[0].ID = id
		}
		return nil
	}
	for i := range events {
		if events[i].ID == "" {
			events[i].ID = id + ":" + strconv.Itoa(i)
			if !fleet.ValidID(events[i].ID) {
				return fleet.Errorf(fleet.EINVALID, "event %d: webhook-id too long to derive the delivery id %q", i, events[i].ID)
			}
		}
	}
	return nil
}

// eventsHint guesses how many events a body holds (an event object takes
// at least ~40 bytes), so a batch is decoded into one allocation instead
// of a growing slice.
func eventsHint(body []byte, maxBatch int) int {
	if len(body) == 0 || body[0] != '[' {
		return 1
	}
	return min(maxBatch, len(body)/40+1)
}
