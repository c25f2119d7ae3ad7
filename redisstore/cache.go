package redisstore

import (
	"hash/maphash"
	"sync"
)

// wsCache remembers which workspace a device is registered in, so the hot
// path needs no index lookup. It may be stale (another replica moved or
// deleted the device): the apply script checks that the device is in the
// workspace and answers rNotHere otherwise, and the entry is then dropped.
// Bounded: a full shard is cleared rather than grown.
type wsCache struct {
	seed   maphash.Seed
	max    int
	shards [64]cacheShard
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[string]string
}

func newWSCache(size int) *wsCache {
	c := &wsCache{seed: maphash.MakeSeed(), max: size/64 + 1}
	for i := range c.shards {
		c.shards[i].m = make(map[string]string)
	}
	return c
}

func (c *wsCache) shard(device string) *cacheShard {
	return &c.shards[maphash.String(c.seed, device)%64]
}

func (c *wsCache) get(device string) (string, bool) {
	sh := c.shard(device)
	sh.mu.RLock()
	ws, ok := sh.m[device]
	sh.mu.RUnlock()
	return ws, ok
}

func (c *wsCache) set(device, ws string) {
	sh := c.shard(device)
	sh.mu.Lock()
	if len(sh.m) >= c.max {
		clear(sh.m)
	}
	sh.m[device] = ws
	sh.mu.Unlock()
}

func (c *wsCache) del(device string) {
	sh := c.shard(device)
	sh.mu.Lock()
	delete(sh.m, device)
	sh.mu.Unlock()
}
