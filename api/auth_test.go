package api

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

func TestAuth(t *testing.T) {
	e := MustEnv(t, envOptions{inMemory: true})
	rw, _ := e.MustKey(t, "acme", false)
	ro, _ := e.MustKey(t, "acme", true)
	revoked, revokedID := e.MustKey(t, "acme", false)
	if _, err := e.store.RevokeKey(context.Background(), revokedID, nil); err != nil {
		t.Fatal(err)
	}
	e.MustSend(t, registered("d1", "acme", "n", "Linux", time.Now()))
	unknown := "sk_live_" + strings.Repeat("A", 40)

	tests := map[string]struct {
		method, path, route, key string
		body                     string
		status                   int
		name                     string
	}{
		"no key":                      {"GET", "/api/v1/devices", routeDevices, "", "", 401, "unauthorized"},
		"unknown key":                 {"GET", "/api/v1/devices", routeDevices, unknown, "", 401, "unauthorized"},
		"revoked key":                 {"GET", "/api/v1/devices", routeDevices, revoked, "", 401, "unauthorized"},
		"wrong prefix":                {"GET", "/api/v1/devices", routeDevices, "sk_test_" + strings.Repeat("A", 40), "", 401, "unauthorized"},
		"too short":                   {"GET", "/api/v1/devices", routeDevices, "sk_live_" + strings.Repeat("A", 31), "", 401, "unauthorized"},
		"not alphanumeric":            {"GET", "/api/v1/devices", routeDevices, "sk_live_" + strings.Repeat("A", 39) + "-", "", 401, "unauthorized"},
		"too long":                    {"GET", "/api/v1/devices", routeDevices, "sk_live_" + strings.Repeat("A", 300), "", 401, "unauthorized"},
		"post without key":            {"POST", "/api/v1/devices/d1/unbind", routeUnbind, "", "", 401, "unauthorized"},
		"read-only get":               {"GET", "/api/v1/devices/d1", routeDevice, ro, "", 200, ""},
		"read-only unbind":            {"POST", "/api/v1/devices/d1/unbind", routeUnbind, ro, "", 403, "forbidden"},
		"read-only rotate":            {"POST", "/api/v1/devices/d1/secret:rotate", routeRotate, ro, "", 403, "forbidden"},
		"read-only invite":            {"POST", "/api/v1/members:invite", routeInvite, ro, `{"email":"a@b.c","role":"member"}`, 403, "forbidden"},
		"read-write unbind":           {"POST", "/api/v1/devices/d1/unbind", routeUnbind, rw, "", 200, ""},
		"openapi needs no key":        {"GET", "/api/openapi.json", "/api/openapi.json", "", "", 200, ""},
		"healthz needs no key":        {"GET", "/healthz", "/healthz", "", "", 200, ""},
		"readyz needs no key":         {"GET", "/readyz", "/readyz", "", "", 200, ""},
		"webhook ignores the api key": {"POST", "/backend/webhook", "/backend/webhook", rw, `[]`, 401, "unauthorized"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			r := e.Do(t, call{method: tc.method, path: tc.path, route: tc.route, key: tc.key, body: body})
			if tc.name != "" {
				wantError(t, r, tc.status, tc.name)
			} else if r.Status != tc.status {
				t.Fatalf("got %d %s, want %d", r.Status, r.Body, tc.status)
			}
		})
	}
	t.Run("key of another workspace", func(t *testing.T) {
		other, _ := e.MustKey(t, "other", false)
		wantError(t, e.Get(t, "/api/v1/devices/d1", routeDevice, other), 404, "not_found")
	})
}

// TestAuthThrottle: a client that keeps failing gets 429 without store
// lookups, except with a key already known to be good. Without a lookup
// allowance (--auth-throttled-lookups 0, as here) that includes a good key
// this replica has not looked up yet; TestThrottleKeepsValidKeys covers
// the allowance.
func TestAuthThrottle(t *testing.T) {
	e := MustEnv(t, envOptions{inMemory: true, authFailBurst: 3})
	good, _ := e.MustKey(t, "acme", true)
	uncached, _ := e.MustKey(t, "acme", true)
	if r := e.Get(t, routeDevices, routeDevices, good); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	bad := "sk_live_" + strings.Repeat("B", 40)
	for range 3 {
		wantError(t, e.Get(t, routeDevices, routeDevices, bad), 401, "unauthorized")
	}
	for _, k := range []struct{ name, key string }{{"unknown", bad}, {"missing", ""}, {"malformed", "nope"}, {"good but not cached", uncached}} {
		t.Run(k.name, func(t *testing.T) {
			r := e.Get(t, routeDevices, routeDevices, k.key)
			wantError(t, r, 429, "rate_limited")
		})
	}
	t.Run("good cached key", func(t *testing.T) {
		if r := e.Get(t, routeDevices, routeDevices, good); r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
	})
}

// TestRevokedKeyRefusedWithinTTL: a cached key stops working within the
// cache TTL of its revocation, without any restart.
func TestRevokedKeyRefusedWithinTTL(t *testing.T) {
	const ttl = 300 * time.Millisecond
	e := MustEnv(t, envOptions{inMemory: true, keyTTL: ttl})
	key, id := e.MustKey(t, "acme", false)
	if r := e.Get(t, routeDevices, routeDevices, key); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if _, err := e.store.RevokeKey(context.Background(), id, nil); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	for {
		r := e.Get(t, routeDevices, routeDevices, key)
		if r.Status == 401 {
			wantError(t, r, 401, "unauthorized")
			break
		}
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		// The bound is the TTL; the slack is for a loaded machine only.
		if time.Since(revokedAt) > ttl+time.Second {
			t.Fatalf("revoked key still accepted after %v (ttl %v)", time.Since(revokedAt), ttl)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKeyLastUsed: a use records last_used_at, a second use within the
// minute does not write again.
func TestKeyLastUsed(t *testing.T) {
	e := MustEnv(t, envOptions{inMemory: true, now: t0})
	key, _ := e.MustKey(t, "acme", true)
	lastUsed := func() time.Time {
		t.Helper()
		keys, err := e.store.ListKeys(context.Background(), "acme")
		if err != nil || len(keys) != 1 {
			t.Fatalf("list keys: %v %v", keys, err)
		}
		return keys[0].LastUsedAt
	}
	if !lastUsed().IsZero() {
		t.Fatal("used before any request")
	}
	e.Get(t, routeDevices, routeDevices, key)
	deadline := time.Now().Add(5 * time.Second)
	for lastUsed().IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("last_used_at never recorded")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := lastUsed(); !got.Equal(t0) {
		t.Fatalf("last_used_at %v, want %v", got, t0)
	}
	e.clock.Advance(30 * time.Second)
	e.Get(t, routeDevices, routeDevices, key)
	time.Sleep(200 * time.Millisecond)
	if got := lastUsed(); !got.Equal(t0) {
		t.Fatalf("touched again within the minute: %v", got)
	}
}

// fakeKeys is a KeyStore whose KeyByHash is scripted by the test.
type fakeKeys struct {
	fleet.KeyStore
	calls atomic.Int64
	get   func(h []byte) (fleet.APIKey, error)
}

func (f *fakeKeys) TouchKey(context.Context, string, time.Time) error { return nil }

func (f *fakeKeys) KeyByHash(_ context.Context, h []byte) (fleet.APIKey, error) {
	f.calls.Add(1)
	return f.get(h)
}

// finder adapts a function to keyFinder.
type finder func() (fleet.APIKey, error)

func (f finder) KeyByHash(context.Context, []byte) (fleet.APIKey, error) { return f() }

func TestKeyCache(t *testing.T) {
	hashOf := func(i int) [sha256.Size]byte { return sha256.Sum256([]byte{byte(i), byte(i >> 8), byte(i >> 16)}) }
	notFound := finder(func() (fleet.APIKey, error) { return fleet.APIKey{}, fleet.Errorf(fleet.ENOTFOUND, "no") })

	t.Run("bounded", func(t *testing.T) {
		c := newKeyCache(time.Minute)
		for i := range 3 * keyCacheSize {
			if _, err := c.resolve(hashOf(i), notFound); err != nil {
				t.Fatal(err)
			}
		}
		n := c.entries.Len()
		if n > keyCacheSize || n < keyCacheSize/2 {
			t.Fatalf("%d entries for a bound of %d", n, keyCacheSize)
		}
	})

	t.Run("unknown keys are cached, outages are not", func(t *testing.T) {
		c := newKeyCache(time.Minute)
		var calls int
		down := errors.Join(errors.New("dial"), fleet.Errorf(fleet.EUNAVAILABLE, "down"))
		fail := finder(func() (fleet.APIKey, error) { calls++; return fleet.APIKey{}, down })
		for range 3 {
			if _, err := c.resolve(hashOf(1), fail); fleet.ErrorCode(err) != fleet.EUNAVAILABLE {
				t.Fatalf("got %v", err)
			}
		}
		if calls != 3 {
			t.Fatalf("outage cached: %d loads for 3 lookups", calls)
		}
		calls = 0
		miss := finder(func() (fleet.APIKey, error) { calls++; return notFound() })
		for range 3 {
			e, err := c.resolve(hashOf(2), miss)
			if err != nil || e.p != nil {
				t.Fatalf("got %+v %v", e, err)
			}
		}
		if calls != 1 {
			t.Fatalf("unknown key looked up %d times", calls)
		}
	})

	t.Run("expiry", func(t *testing.T) {
		const ttl = 50 * time.Millisecond
		c := newKeyCache(ttl)
		var calls atomic.Int64
		load := finder(func() (fleet.APIKey, error) {
			calls.Add(1)
			return fleet.APIKey{ID: "k", Workspace: "w"}, nil
		})
		t0 := time.Now()
		c.resolve(hashOf(1), load)
		c.resolve(hashOf(1), load)
		// Within the TTL the second lookup is a hit; a machine too slow to
		// make two calls within 50ms has legitimately expired the entry.
		if time.Since(t0) < ttl && calls.Load() != 1 {
			t.Fatalf("%d loads within the TTL, want 1", calls.Load())
		}
		before := calls.Load()
		time.Sleep(ttl + 10*time.Millisecond)
		e, _ := c.resolve(hashOf(1), load)
		if calls.Load() != before+1 || e.p == nil || e.p.workspace != "w" {
			t.Fatalf("%d loads after expiry (had %d), entry %+v", calls.Load(), before, e)
		}
	})

	t.Run("one load for concurrent lookups", func(t *testing.T) {
		c := newKeyCache(time.Minute)
		var calls atomic.Int64
		release := make(chan struct{})
		load := finder(func() (fleet.APIKey, error) {
			calls.Add(1)
			<-release
			return fleet.APIKey{ID: "k", Workspace: "w"}, nil
		})
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				if e, err := c.resolve(hashOf(7), load); err != nil || e.p == nil {
					t.Errorf("got %+v %v", e, err)
				}
			})
		}
		time.Sleep(20 * time.Millisecond)
		close(release)
		wg.Wait()
		if calls.Load() != 1 {
			t.Fatalf("%d loads", calls.Load())
		}
	})

	t.Run("a panicking load releases the waiters", func(t *testing.T) {
		c := newKeyCache(time.Minute)
		func() {
			defer func() { recover() }()
			c.resolve(hashOf(9), finder(func() (fleet.APIKey, error) { panic("boom") }))
		}()
		done := make(chan struct{})
		go func() {
			c.resolve(hashOf(9), notFound)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatal("lookup stuck behind a panicked one")
		}
	})
}

// TestKeyLookupInternalError: a store fault that is not an outage is still
// never a 401.
func TestKeyLookupInternalError(t *testing.T) {
	keys := &fakeKeys{get: func([]byte) (fleet.APIKey, error) { return fleet.APIKey{}, errors.New("WRONGTYPE") }}
	s := MustNew(t, Config{Keys: keys})
	base := serveServer(t, s)
	e := &env{base: base, http: newClient(t)}
	r := e.Get(t, routeDevices, routeDevices, "sk_live_"+strings.Repeat("A", 40))
	wantError(t, r, 503, "unavailable")
}
