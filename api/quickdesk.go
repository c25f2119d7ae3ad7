package api

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/ingest"
	"github.com/valyala/fasthttp"
)

// QuickDesk's signature header, and the start of its value; the lowercase
// hex of an HMAC-SHA256 follows.
const (
	quickDeskSigHeader = "X-Webhook-Signature"
	quickDeskSigPrefix = "sha256="
)

// quickdesk is POST /backend/webhook/quickdesk: QuickDesk's own webhook
// deliveries (SPEC §3b), one envelope per request, signed with a shared
// secret of --webhook-secret. It is admitted with a well-formed signature
// (authQuickDesk) and verifies the HMAC over the body here. The deliveries
// go through the same batcher and store as the main webhook, and count in
// the same metrics.
func (s *Server) quickdesk(ctx *fasthttp.RequestCtx, _ *principal) error {
	if msg := s.verifyQuickDesk(ctx.Request.Header.Peek(quickDeskSigHeader), ctx.PostBody()); msg != "" {
		return s.authFailed(ctx, msg)
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
		return err
	}
	var counts [fleet.NumResults]int
	if q.Event.Type == fleet.EventUnknown {
		// Nothing to commit: acknowledged without a store round trip.
		counts[fleet.Ignored] = 1
		if w != nil {
			w.EventNamed(q.Name, fleet.Ignored)
		}
		s.console.events(1)
		writeCounts(ctx, &counts)
		return nil
	}
	events := []fleet.Event{q.Event}
	results := make([]fleet.Result, 1)
	if err := s.commit(events, results); err != nil {
		s.log.Debug("quickdesk delivery not committed", "err", err)
		return err
	}
	counts[results[0]]++
	if w != nil {
		w.Event(q.Event.Type, results[0])
	}
	writeCounts(ctx, &counts)
	return nil
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
