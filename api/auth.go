package api

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"sync/atomic"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/boundedmap"
	"github.com/valyala/fasthttp"
	"golang.org/x/sync/singleflight"
)

// Limits of API key resolution.
const (
	// keyPrefix starts every API key (SPEC §2).
	keyPrefix = "sk_live_"
	// minKeyRandom and maxKeyLen bound the part after the prefix: anything
	// else is refused before it is hashed or looked up, so junk headers
	// never cost a store round trip.
	minKeyRandom = 32
	maxKeyLen    = 256
	// keyCacheSize bounds the cache of resolved keys. Unknown keys are
	// cached too (a flood of made-up keys must not become a flood of store
	// reads), so the bound is what keeps such a flood from growing memory.
	keyCacheSize   = 1 << 14
	keyCacheShards = 16
	// touchEvery is how often a key's last_used_at is written at most: the
	// field is meant for spotting unused keys, not for auditing requests.
	touchEvery = time.Minute
	// touchTimeout bounds one asynchronous last_used_at write, and
	// maxTouches the writes in flight; past that a touch is skipped and
	// retried by a later request.
	touchTimeout = 2 * time.Second
	maxTouches   = 32
	// storeTimeout bounds the store calls of one REST request (the store
	// has its own, shorter, per-call timeout).
	storeTimeout = 2 * time.Second
)

// principal is who a request acts as: a resolved, unrevoked API key. It is
// immutable once built, so handlers may read it without locks.
type principal struct {
	keyID     string
	workspace string
	readOnly  bool
}

// keyEntry is a cached resolution of one key hash. p is nil when the store
// does not know the key or it is revoked.
type keyEntry struct {
	p       *principal
	expires time.Time
	// touched is the Unix nanoseconds of the last last_used_at write; it
	// survives refreshes of the entry so the once-a-minute bound holds
	// across them.
	touched atomic.Int64
}

// keyCache trusts a resolved API key for ttl without asking the store again.
// The TTL is the bound on how long a revoked key keeps working on a replica
// (SPEC §2 asks for 5 s; the default is 2 s). Unknown keys are cached too,
// and they are the entries a full shard drops first: a flood of made-up
// keys evicts its own entries rather than those of valid keys, which the
// throttle relies on to recognise them (see authenticate). Concurrent
// lookups of one key share one store read, so an expiring entry costs one
// read, not one per request. Safe for concurrent use.
type keyCache struct {
	ttl     time.Duration
	entries *boundedmap.Map[[sha256.Size]byte, *keyEntry]
	flights singleflight.Group
	touches chan struct{}
}

func newKeyCache(ttl time.Duration) *keyCache {
	return &keyCache{
		ttl: ttl,
		entries: boundedmap.New(boundedmap.Config[[sha256.Size]byte, *keyEntry]{
			Capacity: keyCacheSize, Shards: keyCacheShards,
			// The key is a SHA-256 already: any 8 of its bytes are uniform.
			Hash:       func(h [sha256.Size]byte) uint64 { return binary.LittleEndian.Uint64(h[:8]) },
			Expendable: func(e *keyEntry) bool { return e.p == nil },
		}),
		touches: make(chan struct{}, maxTouches),
	}
}

// cached returns the cached entry of hash, fresh or not, and whether it is
// fresh (may be trusted without asking the store). An entry that is no
// longer fresh still tells what the last lookup found, which the throttle
// uses: a key found valid then may be looked up again even from a
// throttled client.
func (c *keyCache) cached(hash [sha256.Size]byte) (e *keyEntry, fresh bool) {
	e, _ = c.entries.Get(hash)
	return e, e != nil && time.Now().Before(e.expires)
}

// keyFinder is the part of fleet.KeyStore the cache needs. It is an
// interface rather than a closure so a cache hit allocates nothing.
type keyFinder interface {
	KeyByHash(ctx context.Context, keyHash []byte) (fleet.APIKey, error)
}

// errLookupUnfinished answers the requests that waited on a lookup that
// panicked; the request that ran it gets the panic.
var errLookupUnfinished = fleet.Errorf(fleet.EINTERNAL, "api key lookup did not finish")

// resolve returns the entry of hash, asking the store when there is no
// fresh one. Lookups that fail with anything but ENOTFOUND are not cached:
// an unreachable store must not turn into a cached refusal.
func (c *keyCache) resolve(hash [sha256.Size]byte, store keyFinder) (*keyEntry, error) {
	if e, fresh := c.cached(hash); fresh {
		return e, nil
	}
	var panicked any
	v, err, _ := c.flights.Do(string(hash[:]), func() (v any, err error) {
		defer func() {
			if p := recover(); p != nil {
				panicked, v, err = p, (*keyEntry)(nil), errLookupUnfinished
			}
		}()
		return c.load(hash, store)
	})
	if panicked != nil {
		panic(panicked)
	}
	e, _ := v.(*keyEntry)
	return e, err
}

// load asks the store about hash and caches the answer; it runs once for
// all the requests of one flight.
func (c *keyCache) load(hash [sha256.Size]byte, store keyFinder) (*keyEntry, error) {
	old, fresh := c.cached(hash)
	if fresh {
		// Loaded by a flight that ended after this request looked.
		return old, nil
	}
	lctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	k, err := store.KeyByHash(lctx, hash[:])
	var e *keyEntry
	switch {
	case err == nil:
		e = &keyEntry{expires: time.Now().Add(c.ttl)}
		if !k.Revoked && k.Workspace != "" {
			e.p = &principal{keyID: k.ID, workspace: k.Workspace, readOnly: k.ReadOnly}
		}
	case fleet.ErrorCode(err) == fleet.ENOTFOUND:
		e = &keyEntry{expires: time.Now().Add(c.ttl)}
	default:
		return nil, err
	}
	if old != nil {
		e.touched.Store(old.touched.Load())
	}
	c.entries.Put(hash, e)
	return e, nil
}

// validKeySyntax reports whether k looks like an API key: the prefix and at
// least minKeyRandom letters or digits.
func validKeySyntax(k []byte) bool {
	if len(k) < len(keyPrefix)+minKeyRandom || len(k) > maxKeyLen || string(k[:len(keyPrefix)]) != keyPrefix {
		return false
	}
	for _, c := range k[len(keyPrefix):] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Answers of authenticate.
var (
	errNoKey        = fleet.Errorf(fleet.EUNAUTHORIZED, "missing x-api-key header")
	errMalformedKey = fleet.Errorf(fleet.EUNAUTHORIZED, "malformed API key: expected sk_live_ followed by at least 32 letters or digits")
	errUnknownKey   = fleet.Errorf(fleet.EUNAUTHORIZED, "unknown or revoked API key")
	errKeyUnchecked = fleet.Errorf(fleet.EUNAVAILABLE, "the API key could not be checked, retry later")
	errReadOnlyKey  = fleet.Errorf(fleet.EFORBIDDEN, "this API key is read-only")
)

// authenticate resolves x-api-key to a principal, or returns the error to
// answer with. The key itself is never logged nor kept: only its SHA-256
// leaves this function.
//
// A key cached as good is let through before anything else. A client that
// has used up its failed authentications (the server's authThrottle) gets
// 429 without a store lookup, except that a valid key is never refused
// because of other clients' failures behind the same address: a key that
// this replica found valid at its last lookup is looked up again as if the
// client were not throttled (revocation still takes effect within the
// cache TTL), and any other well-formed key is looked up while the client's
// lookup allowance lasts. A key that was looked up is answered by what the
// lookup found (200, or 401), never 429.
func (s *Server) authenticate(ctx *fasthttp.RequestCtx) (*principal, error) {
	raw := ctx.Request.Header.Peek("x-api-key")
	wellFormed := validKeySyntax(raw)
	var hash [sha256.Size]byte
	var known *keyEntry
	if wellFormed {
		hash = sha256.Sum256(raw)
		e, fresh := s.keys.cached(hash)
		if fresh && e.p != nil {
			s.touch(e)
			return e.p, nil
		}
		if e != nil && (fresh || e.p != nil) {
			known = e
		}
	}
	var src string
	if s.throttle != nil {
		src = s.source(ctx)
		if blocked, wait := s.throttle.Blocked(src); blocked {
			switch {
			case known != nil && known.p != nil:
				// Found valid at its last lookup: ask again, unthrottled.
			case wellFormed && known == nil && s.throttle.Lookup(src):
				if m := s.cfg.Limits; m != nil {
					m.ThrottledLookups.Inc()
				}
			default:
				return nil, s.throttledError(wait)
			}
		}
	}
	switch {
	case len(raw) == 0:
		s.throttle.Fail(src)
		return nil, errNoKey
	case !wellFormed:
		s.throttle.Fail(src)
		return nil, errMalformedKey
	}
	e, err := s.keys.resolve(hash, s.cfg.Keys)
	if err != nil {
		if fleet.ErrorCode(err) == fleet.EINTERNAL {
			// Not the client's fault, and a retry may well succeed: the
			// same answer as an unreachable store, never a 401.
			s.log.Error("api key lookup failed", "err", err)
			return nil, errKeyUnchecked
		}
		return nil, err
	}
	if e.p == nil {
		s.throttle.Fail(src)
		return nil, errUnknownKey
	}
	s.touch(e)
	return e.p, nil
}

// touch records the key's last use at most once per touchEvery, in the
// background: a slow store must not slow the request that merely used it.
func (s *Server) touch(e *keyEntry) {
	now := time.Now().UnixNano()
	last := e.touched.Load()
	if now-last < int64(touchEvery) || !e.touched.CompareAndSwap(last, now) {
		return
	}
	select {
	case s.keys.touches <- struct{}{}:
	default:
		e.touched.CompareAndSwap(now, last)
		return
	}
	id, at := e.p.keyID, s.now()
	go func() {
		defer func() { <-s.keys.touches }()
		c, cancel := context.WithTimeout(context.Background(), touchTimeout)
		defer cancel()
		if err := s.cfg.Keys.TouchKey(c, id, at); err != nil {
			s.log.Debug("recording api key use failed", "key_id", id, "err", err)
		}
	}()
}
