package redisstore

import (
	"hash/maphash"
	"sync"
)

// routeCache remembers devices' placement histories, so the hot path needs
// no index lookup. It may be stale (another replica placed the device
// since): the workspace a stale route leads to answers rNotHere, and the
// route is read again from the index. Bounded: a full shard is cleared
// rather than grown.
type routeCache struct {
	seed   maphash.Seed
	max    int
	shards [64]cacheShard
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[string]*route
}

func newRouteCache(size int) *routeCache {
	c := &routeCache{seed: maphash.MakeSeed(), max: size/64 + 1}
	for i := range c.shards {
		c.shards[i].m = make(map[string]*route)
	}
	return c
}

func (c *routeCache) shard(device string) *cacheShard {
	return &c.shards[maphash.String(c.seed, device)%64]
}

func (c *routeCache) get(device string) (*route, bool) {
	sh := c.shard(device)
	sh.mu.RLock()
	rt, ok := sh.m[device]
	sh.mu.RUnlock()
	return rt, ok
}

// set remembers the history raw of device and returns its route; nil (and
// nothing remembered) when raw is empty or malformed.
func (c *routeCache) set(device, raw string) *route {
	h, ok := parseHistory(raw)
	if !ok || len(h) == 0 {
		c.del(device)
		return nil
	}
	rt := &route{raw: raw, h: h}
	sh := c.shard(device)
	sh.mu.Lock()
	if len(sh.m) >= c.max {
		clear(sh.m)
	}
	sh.m[device] = rt
	sh.mu.Unlock()
	return rt
}

func (c *routeCache) del(device string) {
	sh := c.shard(device)
	sh.mu.Lock()
	delete(sh.m, device)
	sh.mu.Unlock()
}
