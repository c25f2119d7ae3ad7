package api

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// madeUpKey returns a well-formed API key that no store knows.
func madeUpKey(tb testing.TB) string { return "sk_live_" + randomString(tb, 40) }

// TestThrottleKeepsValidKeys is case 6 of the bounds issue: from one
// address (every client behind a load balancer is one), about 10 made-up
// keys a second while a valid key makes 32 requests, one every 500 ms. The
// throttle's clock is the test's, advanced 100 ms per made-up key, so the
// rates are exact whatever the machine; the key cache TTL is 1 ms, so every
// request of the valid key after its first finds its entry expired, the
// case the throttle used to refuse.
func TestThrottleKeepsValidKeys(t *testing.T) {
	e := MustEnv(t, envOptions{inMemory: true, now: t0, keyTTL: time.Millisecond, authFailBurst: 20, throttledLookups: 20})
	e.srv.throttle.refill = time.Second // the daemon's default (MustEnv refills once a minute)
	valid, id := e.MustKey(t, "acme", true)
	attack := func(n int) {
		t.Helper()
		for range n {
			r := e.Get(t, routeDevices, routeDevices, madeUpKey(t))
			if r.Status != 401 && r.Status != 429 {
				t.Fatalf("made-up key: %d %s", r.Status, r.Body)
			}
			e.clock.Advance(100 * time.Millisecond)
		}
	}
	// 30 made-up keys at 10/s use up the burst of 20 (refilled at 1/s):
	// the address is blocked when the valid key is first seen.
	attack(30)
	if blocked, _ := e.srv.throttle.Blocked("127.0.0.1"); !blocked {
		t.Fatal("the attacker's address is not blocked: the test does not test the throttle")
	}
	codes := map[int]int{}
	for range 32 {
		r := e.Get(t, routeDevices, routeDevices, valid)
		codes[r.Status]++
		attack(5)
	}
	if codes[200] != 32 {
		t.Fatalf("valid key: %v, want 32 × 200", codes)
	}
	if n := testutil.ToFloat64(e.limits.ThrottledLookups); n == 0 {
		t.Fatal("no lookup was made from the allowance of the blocked address")
	}

	// Revocation still reaches the throttled address within the TTL: the
	// valid key, once revoked, is looked up again and refused with 401.
	if _, err := e.store.RevokeKey(context.Background(), id, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // past the 1 ms TTL
	wantError(t, e.Get(t, routeDevices, routeDevices, valid), 401, "unauthorized")
}

// TestThrottledLookupAllowance drives past --auth-throttled-lookups: a
// blocked address sending more new keys than its allowance gets 429 (JSON,
// Retry-After) for the rest without a lookup, including a valid key never
// seen before, while a key found valid earlier keeps being served.
func TestThrottledLookupAllowance(t *testing.T) {
	e := MustEnv(t, envOptions{inMemory: true, now: t0, keyTTL: time.Millisecond, authFailBurst: 3, throttledLookups: 2})
	seen, _ := e.MustKey(t, "acme", true)
	unseen, _ := e.MustKey(t, "acme", true)
	if r := e.Get(t, routeDevices, routeDevices, seen); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	for range 3 { // the burst
		wantError(t, e.Get(t, routeDevices, routeDevices, madeUpKey(t)), 401, "unauthorized")
	}
	// Blocked: the allowance of 2 lookups is answered by the lookup (401),
	// everything past it is 429 without one.
	for range 2 {
		wantError(t, e.Get(t, routeDevices, routeDevices, madeUpKey(t)), 401, "unauthorized")
	}
	lookups := testutil.ToFloat64(e.limits.ThrottledLookups)
	r := e.Get(t, routeDevices, routeDevices, madeUpKey(t))
	wantError(t, r, 429, "rate_limited")
	if ra := r.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Fatalf("429 without a usable Retry-After: %q", ra)
	}
	wantError(t, e.Get(t, routeDevices, routeDevices, unseen), 429, "rate_limited")
	if got := testutil.ToFloat64(e.limits.ThrottledLookups); got != lookups {
		t.Fatalf("%v lookups past the allowance", got-lookups)
	}
	if n := testutil.ToFloat64(e.limits.Throttled); n != 2 {
		t.Fatalf("fleetd_auth_throttled_total = %v, want 2", n)
	}
	// The key found valid before is served, its entry long expired.
	time.Sleep(5 * time.Millisecond)
	for range 3 {
		if r := e.Get(t, routeDevices, routeDevices, seen); r.Status != 200 {
			t.Fatalf("known valid key while throttled: %d %s", r.Status, r.Body)
		}
	}
	// The allowance refills with time: the unseen valid key gets through.
	e.clock.Advance(time.Second)
	if r := e.Get(t, routeDevices, routeDevices, unseen); r.Status != 200 {
		t.Fatalf("valid key after the allowance refilled: %d %s", r.Status, r.Body)
	}
	// Malformed and missing keys never cost a lookup: 429 while blocked.
	wantError(t, e.Get(t, routeDevices, routeDevices, strings.Repeat("x", 40)), 429, "rate_limited")
	wantError(t, e.Get(t, routeDevices, routeDevices, ""), 429, "rate_limited")
}
