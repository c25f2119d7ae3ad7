package api

import (
	"hash/maphash"
	"net"
	"strings"
	"sync"
	"time"

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
	seed    maphash.Seed
	shards  [32]throttleShard
	now     func() time.Time
}

type throttleShard struct {
	mu sync.Mutex
	m  map[string]*bucket
}

type bucket struct {
	tokens  float64 // failures left
	lookups float64 // lookups left while blocked
	last    time.Time
}

const maxThrottleSources = 1 << 16 // per shard; a full shard is cleared

func newAuthThrottle(burst int, refill time.Duration, lookups int, now func() time.Time) *authThrottle {
	t := &authThrottle{burst: float64(burst), refill: refill, lookups: float64(max(0, lookups)), seed: maphash.MakeSeed(), now: now}
	for i := range t.shards {
		t.shards[i].m = map[string]*bucket{}
	}
	return t
}

func (t *authThrottle) shard(src string) *throttleShard {
	return &t.shards[maphash.String(t.seed, src)%uint64(len(t.shards))]
}

// take refreshes src's bucket; callers hold the shard lock.
func (t *authThrottle) take(sh *throttleShard, src string) *bucket {
	now := t.now()
	b := sh.m[src]
	if b == nil {
		if len(sh.m) >= maxThrottleSources {
			clear(sh.m)
		}
		b = &bucket{tokens: t.burst, lookups: t.lookups, last: now}
		sh.m[src] = b
	}
	d := float64(max(0, now.Sub(b.last)))
	b.tokens = min(t.burst, b.tokens+d/float64(t.refill))
	b.lookups = min(t.lookups, b.lookups+d*t.lookups/float64(time.Second))
	b.last = now
	return b
}

// Blocked reports whether src has used up its failures, and how long
// until one is forgiven.
func (t *authThrottle) Blocked(src string) (bool, time.Duration) {
	if t == nil {
		return false, 0
	}
	sh := t.shard(src)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := t.take(sh, src)
	if b.tokens >= 1 {
		return false, 0
	}
	return true, time.Duration((1 - b.tokens) * float64(t.refill))
}

// Lookup reports whether blocked src may still have one API key looked up
// now, and takes that lookup from its allowance.
func (t *authThrottle) Lookup(src string) bool {
	if t == nil {
		return true
	}
	sh := t.shard(src)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := t.take(sh, src)
	if b.lookups < 1 {
		return false
	}
	b.lookups--
	return true
}

// Fail records a failed authentication from src.
func (t *authThrottle) Fail(src string) {
	if t == nil {
		return
	}
	sh := t.shard(src)
	sh.mu.Lock()
	b := t.take(sh, src)
	b.tokens = max(0, b.tokens-1)
	sh.mu.Unlock()
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

// throttled answers 429 with Retry-After when src is blocked.
func (s *Server) throttled(ctx *fasthttp.RequestCtx, src string) (int, bool) {
	blocked, wait := s.throttle.Blocked(src)
	if !blocked {
		return 0, false
	}
	return s.refuseThrottled(ctx, wait), true
}

// refuseThrottled answers 429 with a Retry-After of wait, rounded up to
// whole seconds, and counts it.
func (s *Server) refuseThrottled(ctx *fasthttp.RequestCtx, wait time.Duration) int {
	if m := s.cfg.Limits; m != nil {
		m.Throttled.Inc()
	}
	secs := int(wait/time.Second) + 1
	return writeErrorBodyRetry(ctx, fasthttp.StatusTooManyRequests, "rate_limited", "too many failed authentications from this client; retry later", secs)
}
