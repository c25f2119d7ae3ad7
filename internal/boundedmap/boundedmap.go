// Package boundedmap is a concurrent map that never holds more than a fixed
// number of entries, for the caches and per-client state that outside input
// fills (API keys, client addresses, device routes): a flood of new keys
// costs a bounded amount of memory, and lookups from many goroutines do not
// contend on one lock.
//
// The map is split into shards, each a Go map under its own lock, and a key
// always lives in the shard its hash picks. A shard that is full when a new
// key arrives makes room by one of two policies:
//
//   - clear (the default): the shard is emptied. It is the cheapest policy
//     and suits state that is cheap to rebuild, or whose loss only makes a
//     client start afresh.
//   - expendable-first (Config.Expendable set): one entry goes, the first
//     expendable one among evictSample entries looked at, else the first one
//     looked at. Go starts a map iteration at a random place, so this is
//     random eviction that spares the entries the caller cares about while a
//     flood of expendable ones evicts its own kind.
//
// Neither policy is an LRU: an entry is kept or dropped without regard to
// when it was last used, which is what keeps a hit free of writes.
package boundedmap

import (
	"hash/maphash"
	"sync"
)

// DefaultShards is the number of shards of a Config that names none.
const DefaultShards = 64

// evictSample is how many entries an expendable-first shard looks at to
// find one to drop.
const evictSample = 8

// Config describes a Map.
type Config[K comparable, V any] struct {
	// Capacity bounds the entries held: each shard holds at most
	// Capacity/Shards of them (rounded up, at least one).
	Capacity int
	// Shards is the number of independently locked parts (DefaultShards
	// when zero).
	Shards int
	// Hash spreads keys over the shards. It must be the same for equal keys
	// and should be hard to predict for keys that outsiders choose
	// (StringHash is, for strings).
	Hash func(K) uint64
	// Expendable, when set, selects the expendable-first policy: a full
	// shard drops one entry, preferring those for which it returns true.
	// It is called with the shard's lock held.
	Expendable func(V) bool
}

// Map is a bounded concurrent map. Safe for concurrent use.
type Map[K comparable, V any] struct {
	hash       func(K) uint64
	perShard   int
	expendable func(V) bool
	shards     []shard[K, V]
}

type shard[K comparable, V any] struct {
	mu sync.RWMutex
	m  map[K]V
}

// New returns an empty map of c. It panics when c has no Hash or a
// Capacity below one, which are programming errors.
func New[K comparable, V any](c Config[K, V]) *Map[K, V] {
	if c.Hash == nil || c.Capacity < 1 {
		panic("boundedmap: a Config needs a Hash and a Capacity of at least 1")
	}
	if c.Shards <= 0 {
		c.Shards = DefaultShards
	}
	m := &Map[K, V]{
		hash:       c.Hash,
		perShard:   max(1, (c.Capacity+c.Shards-1)/c.Shards),
		expendable: c.Expendable,
		shards:     make([]shard[K, V], c.Shards),
	}
	for i := range m.shards {
		m.shards[i].m = make(map[K]V)
	}
	return m
}

// StringHash returns a hash of strings seeded at random, so that which keys
// share a shard cannot be chosen from outside.
func StringHash() func(string) uint64 {
	seed := maphash.MakeSeed()
	return func(s string) uint64 { return maphash.String(seed, s) }
}

func (m *Map[K, V]) shard(k K) *shard[K, V] {
	return &m.shards[m.hash(k)%uint64(len(m.shards))]
}

// Get returns the value of k and whether there is one.
func (m *Map[K, V]) Get(k K) (V, bool) {
	sh := m.shard(k)
	sh.mu.RLock()
	v, ok := sh.m[k]
	sh.mu.RUnlock()
	return v, ok
}

// Put sets the value of k, first making room when k is new and its shard
// is full.
func (m *Map[K, V]) Put(k K, v V) {
	sh := m.shard(k)
	sh.mu.Lock()
	m.set(sh, k, v)
	sh.mu.Unlock()
}

// Update sets the value of k to what fn returns when given the current one
// (the zero value and false when there is none), all under the shard's
// lock, so that a read-modify-write of one key is atomic; it returns the
// new value. fn must not use the map.
func (m *Map[K, V]) Update(k K, fn func(v V, ok bool) V) V {
	sh := m.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old, ok := sh.m[k]
	v := fn(old, ok)
	m.set(sh, k, v)
	return v
}

// Delete removes k.
func (m *Map[K, V]) Delete(k K) {
	sh := m.shard(k)
	sh.mu.Lock()
	delete(sh.m, k)
	sh.mu.Unlock()
}

// Len returns the number of entries held.
func (m *Map[K, V]) Len() int {
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// set stores v under k; callers hold sh's lock.
func (m *Map[K, V]) set(sh *shard[K, V], k K, v V) {
	if len(sh.m) >= m.perShard {
		if _, ok := sh.m[k]; !ok {
			m.makeRoom(sh)
		}
	}
	sh.m[k] = v
}

// makeRoom applies the eviction policy to the full shard sh.
func (m *Map[K, V]) makeRoom(sh *shard[K, V]) {
	if m.expendable == nil {
		clear(sh.m)
		return
	}
	var first K
	n := 0
	for k, v := range sh.m {
		if m.expendable(v) {
			delete(sh.m, k)
			return
		}
		if n == 0 {
			first = k
		}
		if n++; n == evictSample {
			break
		}
	}
	delete(sh.m, first)
}
