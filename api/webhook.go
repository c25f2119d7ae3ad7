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
	if !s.webhookAuthorized(ctx) {
		return writeErrorBody(ctx, fasthttp.StatusUnauthorized, "unauthorized", "missing or wrong x-webhook-secret")
	}
	// The events outlive this handler when the commit times out (the
	// batcher still holds them), and fasthttp reuses the body buffer, so
	// decode from a copy that the events own.
	body := append([]byte(nil), ctx.PostBody()...)
	events, err := ingest.Decode(body, nil, s.now(), s.cfg.MaxBatch)
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
		return s.writeError(ctx, err)
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

// webhookAuthorized compares x-webhook-secret with every configured secret
// in constant time (all of them are compared, so timing does not tell which
// one matched or how much of it).
func (s *Server) webhookAuthorized(ctx *fasthttp.RequestCtx) bool {
	got := ctx.Request.Header.Peek("x-webhook-secret")
	ok := 0
	for _, want := range s.cfg.WebhookSecrets {
		ok |= subtle.ConstantTimeCompare(got, []byte(want))
	}
	return ok == 1 && len(got) > 0
}
