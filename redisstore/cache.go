package redisstore

import "github.com/fleetd/fleetd/internal/boundedmap"

// routeCache remembers devices' placement histories, so the hot path needs
// no index lookup. It may be stale (another replica placed the device
// since): the workspace a stale route leads to answers rNotHere, and the
// route is read again from the index. Bounded: a full shard is cleared
// rather than grown (internal/boundedmap).
type routeCache struct {
	m *boundedmap.Map[string, *route]
}

func newRouteCache(size int) *routeCache {
	return &routeCache{m: boundedmap.New(boundedmap.Config[string, *route]{Capacity: size + 64, Shards: 64, Hash: boundedmap.StringHash()})}
}

func (c *routeCache) get(device string) (*route, bool) { return c.m.Get(device) }

// set remembers the history raw of device and returns its route; nil (and
// nothing remembered) when raw is empty or malformed.
func (c *routeCache) set(device, raw string) *route {
	h, ok := parseHistory(raw)
	if !ok || len(h) == 0 {
		c.m.Delete(device)
		return nil
	}
	rt := &route{raw: raw, h: h}
	c.m.Put(device, rt)
	return rt
}

func (c *routeCache) del(device string) { c.m.Delete(device) }
