package redisstore

import (
	"hash/fnv"
	"strconv"
)

// Key schema. This file is the only place that knows key names.
//
// Redis Cluster routes a key by the hash of its {hash tag}. Every event must
// apply atomically in one Lua script, and a script may only touch keys of one
// slot, so every key that a device event changes carries its workspace's tag:
//
//	fl:{w:W}:dev          hash  device id → "ON,OT,LS,RT;" + JSON {n,o,u}: online,
//	                             online ts ms, last seen ms, secret rotated ms;
//	                             name, os, user (codecLua in scripts.go)
//	fl:{w:W}:sec          hash  device id → SHA-256 (hex) of its secret
//	fl:{w:W}:devs         zset  device ids, score 0: lexicographic paging
//	fl:{w:W}:on           zset  online device ids, score 0 (exact count: ZCARD)
//	fl:{w:W}:ss           hash  session id → "DEVICE,START,END,DURATION,WRITTEN,STATUS"
//	fl:{w:W}:hist         zset  session id by "at" ms (live and ended)
//	fl:{w:W}:hd:D         zset  the same, for device D (device_id filter)
//	fl:{w:W}:live         zset  live session id by start ms
//	fl:{w:W}:ends         zset  ended session id by end ms (usage edges)
//	fl:{w:W}:secd         hash  UTC day number → session seconds ended that day
//	fl:{w:W}:act:DAY      set   devices with a session ended on DAY
//	fl:{w:W}:secm         hash  UTC month (months since 1970-01) → session seconds
//	fl:{w:W}:actm:MONTH   set   devices with a session ended in MONTH (a whole-month
//	                             usage read is O(1): the default period)
//	fl:{w:W}:tot          hash  "e:STATUS" → sessions ended (seconds ever: sum of secm)
//	fl:{w:W}:sn:DAY:K     hash  12-byte digests of delivery ids that arrived on UTC
//	                             day DAY, in bucket K of that day's B (field → "");
//	                             today and yesterday are checked, so the window is
//	                             24–48 h (dedupeLua in scripts.go)
//	fl:{w:W}:sn           hash  "b:DAY" → B, the bucket count of DAY
//	fl:{w:W}:mem          hash  lower-cased email → JSON member {r,s,i}
//	fl:{w:W}:memidx       zset  member emails, score 0: paging
//	fl:{w:W}:keys         zset  API key ids by creation ms
//
// An event names only its device, so the device → workspace index lives in a
// slot of its own, one of 4096 buckets chosen by FNV-1a of the device id (a
// hash field per device is much smaller than a key per device):
//
//	fl:{d:B}:idx          hash  device id → workspace id
//	fl:{d:B}:pend:D       hash  events kept for unregistered device D (7 days)
//	fl:{d:B}:seen:DAY     set   delivery ids of kept events
//
// Steps that span the two slots are ordered so that a crash or retry between
// them heals rather than corrupts counts:
//   - register: (1) the device record in W, (2) index D → W, returning the
//     kept events, (3) replay kept events in W (idempotent by session id and
//     ts ordering), (4) drop the replayed events. A crash after (1) leaves a
//     device that the redelivered registration completes; events meanwhile
//     are kept in the bucket because the index is unset.
//   - move W0 → W: (1) record in W carrying W0's presence, (2) index → W,
//     (3) evict from W0, which returns W0's record as it was then, (4)
//     merge that presence into W by the online-ordering rules. A crash in
//     between leaves the device in both for a moment, never in neither;
//     the redelivery finishes it. An event that another replica (its
//     cache still naming W0) applies to W0's copy before (3) reaches W
//     through (4); after (3), W0 answers "not here" and the replica
//     re-routes. Only a crash between (3) and (4) loses such an event's
//     presence, until the device's next presence event.
//   - delete: (1) drop the record in W, (2) drop the index if it still says W.
//     After a crash between them the index points at a workspace without the
//     device; the next event sees that, clears the index and is kept as for
//     an unregistered device.
//
// Global keys (one slot each, never touched by the per-event scripts):
//
//	fl:workspaces         set   every known workspace id
//	fl:key:SHA256HEX      hash  API key by the SHA-256 of the key: id, ws, name, ro, c, u, rv
//	fl:keyid:ID           string key id → SHA256HEX
//
// Ids are validated to [A-Za-z0-9._:@-]{1,128} before they get here, so they
// can never close a hash tag or collide with a separator.
const (
	keyPrefix      = "fl:"
	keyWorkspaces  = "fl:workspaces"
	deviceBuckets  = 4096
	pendingTTLDays = 7
)

// wsKey returns the key prefix of workspace ws: "fl:{w:ws}:".
func wsPrefix(ws string) string { return "fl:{w:" + ws + "}:" }

// wsDevKey is the routing key passed as KEYS[1] to per-workspace scripts;
// scripts derive the other names by stripping "dev".
func wsDevKey(ws string) string { return wsPrefix(ws) + "dev" }

func wsKey(ws, name string) string { return wsPrefix(ws) + name }

// bucketOf returns the index bucket of a device.
func bucketOf(device string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(device))
	return h.Sum32() % deviceBuckets
}

// idxKey is the routing key of a device's index bucket, passed as KEYS[1] to
// the bucket scripts, which derive the other names by stripping "idx".
func idxKey(bucket uint32) string {
	return "fl:{d:" + strconv.FormatUint(uint64(bucket), 16) + "}:idx"
}

// pendKey holds the events kept for device d (keep.lua).
func pendKey(d string) string {
	return "fl:{d:" + strconv.FormatUint(uint64(bucketOf(d)), 16) + "}:pend:" + d
}

func apiKeyKey(hashHex string) string { return "fl:key:" + hashHex }
func apiKeyIDKey(id string) string    { return "fl:keyid:" + id }
