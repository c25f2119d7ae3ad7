package api

import (
	"net"
	"strings"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/boundedmap"
	"github.com/valyala/fasthttp"
)

// authThrottle limits failed authentications per source. Each source has
// a bucket of failures that refills at a steady rate; while it is empty
// the source is blocked: requests whose credentials do not check out
// locally get 429 with Retry-After, without a store lookup.
//
// A client with good credentials is never refused because another client
// behind the same address (a load balancer) failed: a shared secret or a
// signature checks out locally; an API key that this replica found valid
// at its last lookup is exempt; and a blocked source may still have other
// well-formed API keys looked up, up to lookups a second (a second bucket
// per source), so a valid key that this replica has not seen yet gets
// through as long as the attacker sends fewer new keys a second than that.
type authThrottle struct {
	burst   float64       // failures allowed at once
	refill  time.Duration // one failure forgiven per refill
	lookups float64       // store lookups per second a blocked source may still make
	now     func() time.Time
	// sources is bounded: a full shard is cleared, which forgives the
	// failures of the sources in it (an attacker with that many addresses
	// gains nothing it did not have).
	sources *boundedmap.Map[string, *bucket]
}

type bucket struct {
	tokens  float64 // failures left
	lookups float64 // lookups left while blocked
	last    time.Time
}

// Bounds of the throttle's state: throttleShards shards of at most
// maxThrottleSources sources each.
const (
	throttleShards     = 32
	maxThrottleSources = 1 << 16
)

func newAuthThrottle(burst int, refill time.Duration, lookups int, now func() time.Time) *authThrottle {
	return &authThrottle{
		burst: float64(burst), refill: refill, lookups: float64(max(0, lookups)), now: now,
		sources: boundedmap.New(boundedmap.Config[string, *bucket]{
			Capacity: throttleShards * maxThrottleSources, Shards: throttleShards, Hash: boundedmap.StringHash(),
		}),
	}
}

// take refreshes src's bucket and hands it to fn, atomically.
func (t *authThrottle) take(src string, fn func(b *bucket)) {
	t.sources.Update(src, func(b *bucket, ok bool) *bucket {
		now := t.now()
		if !ok {
			b = &bucket{tokens: t.burst, lookups: t.lookups, last: now}
		}
		d := float64(max(0, now.Sub(b.last)))
		b.tokens = min(t.burst, b.tokens+d/float64(t.refill))
		b.lookups = min(t.lookups, b.lookups+d*t.lookups/float64(time.Second))
		b.last = now
		fn(b)
		return b
	})
}

// Blocked reports whether src has used up its failures, and how long
// until one is forgiven.
func (t *authThrottle) Blocked(src string) (blocked bool, wait time.Duration) {
	if t == nil {
		return false, 0
	}
	t.take(src, func(b *bucket) {
		if b.tokens < 1 {
			blocked, wait = true, time.Duration((1-b.tokens)*float64(t.refill))
		}
	})
	return blocked, wait
}

// Lookup reports whether blocked src may still have one API key looked up
// now, and takes that lookup from its allowance.
func (t *authThrottle) Lookup(src string) (ok bool) {
	if t == nil {
		return true
	}
	t.take(src, func(b *bucket) {
		if b.lookups >= 1 {
			b.lookups--
			ok = true
		}
	})
	return ok
}

// Fail records a failed authentication from src.
func (t *authThrottle) Fail(src string) {
	if t == nil {
		return
	}
	t.take(src, func(b *bucket) { b.tokens = max(0, b.tokens-1) })
}

// source names the client of a request: the remote IP, or the first
// address of the configured client-IP header when fleetd runs behind a
// proxy that sets it.
func (s *Server) source(ctx *fasthttp.RequestCtx) string {
	if h := s.cfg.ClientIPHeader; h != "" {
		if v := ctx.Request.Header.Peek(h); len(v) > 0 {
			first, _, _ := strings.Cut(string(v), ",")
			if ip := net.ParseIP(strings.TrimSpace(first)); ip != nil {
				return ip.String()
			}
		}
	}
	return ctx.RemoteIP().String()
}

// errThrottled answers a client the throttle blocks.
var errThrottled = fleet.Errorf(fleet.EOVERLOADED, "too many failed authentications from this client; retry later")

// throttledError is the 429 of a blocked client, with a Retry-After of
// wait rounded up to whole seconds, counted.
func (s *Server) throttledError(wait time.Duration) error {
	if m := s.cfg.Limits; m != nil {
		m.Throttled.Inc()
	}
	return withRetryAfter(errThrottled, int(wait/time.Second)+1)
}

// authFailed answers a webhook whose credentials do not check out: 429
// while its client is throttled, else 401 with msg, counted as a failure.
func (s *Server) authFailed(ctx *fasthttp.RequestCtx, msg string) error {
	src := s.source(ctx)
	if blocked, wait := s.throttle.Blocked(src); blocked {
		return s.throttledError(wait)
	}
	s.throttle.Fail(src)
	return &fleet.Error{Code: fleet.EUNAUTHORIZED, Message: msg}
}
