package redisstore

import (
	"hash/fnv"
	"strconv"
)

// Key schema. This file is the only place that knows key names (the
// scripts under lua/ derive theirs from the key they are given).
//
// Redis Cluster routes a key by the hash of its {hash tag}. Every event must
// apply atomically in one Lua script, and a script may only touch keys of one
// slot, so every key that a device event changes carries its workspace's tag:
//
//	fl:{w:W}:dev          hash  device id → "ON,OT,LS,RG,H;" + JSON {n,o,u,x}: online,
//	                             online ts, last seen ("" when OT's or,
//	                             without OT, RG's), registration ts, placement
//	                             history ("" when only RG's registration here);
//	                             name, os, user, unbound (lib.lua: dget)
//	fl:{w:W}:sec          hash  device id → SHA-256 (hex) of its secret
//	fl:{w:W}:devs         zset  devices placed here now, score 0: lexicographic paging
//	fl:{w:W}:on           zset  those online, score 0 (exact count: ZCARD)
//	fl:{w:W}:ss           hash  session id → "DEVICE,START,END,DURATIONSEC,WRITTEN,STATUS",
//	                             or a tombstone "~HOME," + that, for a session that
//	                             moved to its home elsewhere (lib.lua: sget)
//	fl:{w:W}:hist         zset  session id by "at" ms (tombstones included)
//	fl:{w:W}:hd:D         zset  the same, for device D (device_id filter, moves)
//	fl:{w:W}:live         zset  live session id by start ms
//	fl:{w:W}:ends         zset  ended session id by end ms (usage edges)
//	fl:{w:W}:secd         hash  UTC day number → session seconds ended that day
//	fl:{w:W}:act:DAY      set   devices with a session ended on DAY
//	fl:{w:W}:tot          hash  "s" → session seconds ever, "e:LABEL" → sessions
//	                             ended, by status folded to fleet.StatusLabels
//	fl:{w:W}:sn:DAY:K     hash  12-byte digests of delivery ids that arrived on UTC
//	                             day DAY, in bucket K of that day's B (field → "");
//	                             today and yesterday are checked, so the window is
//	                             24–48 h (dedupe.lua)
//	fl:{w:W}:sn           hash  "b:DAY" → B, the bucket count of DAY
//	fl:{w:W}:mem          hash  lower-cased email → JSON member {r,s,i}
//	fl:{w:W}:memidx       zset  member emails, score 0: paging
//	fl:{w:W}:keys         zset  API key ids by creation ms
//
// An event names only its device, so what routes it lives in a slot of its
// own, one of 4096 buckets chosen by FNV-1a of the device id (a hash field
// per device is much smaller than a key per device):
//
//	fl:{d:B}:idx          hash  device id → placement history: its registrations
//	                             "TS+WS" and deletes "TS-", '/'-joined in placement
//	                             order, the newest 32 (placement.go)
//	fl:{d:B}:pend:D       hash  events kept for device D while they have no home:
//	                             "o" presence, "l" last seen, "s:SID" session,
//	                             "i:DIGEST" delivery ids (7 days; keep.lua)
//
// The device's history decides everything that depends on where it was
// (README, "How fleetd decides"): its workspace now (the greatest
// placement, if a registration) and the home of each session (its
// workspace at the session's start). The history only grows (a set union,
// pruned to the newest 32), and so does what each workspace's record of
// the device knows of it: copies merge in any order, so steps that span
// slots can run twice, interleave across replicas, or stop halfway, and a
// later run finishes them.
//
// Placement (a registration or delete, apply.go: place):
//  1. fl:{d:B}:idx: add it to the history (place.lua), which also returns
//     the kept events.
//  2. Every workspace the history names: merge the history into the
//     device's record there, creating it; take the registration's name, os
//     and user if it is that workspace's greatest; list the device only
//     where it is placed now; turn the sessions whose home is now elsewhere
//     into tombstones that keep their content (sync.lua). The workspace the
//     device is placed in now goes first, so it is listed somewhere before
//     the others drop it.
//  3. Carry presence (ordered by ts) and last seen from every record and the
//     kept events to the workspace it is placed in now (adopt.lua).
//  4. Bring the moved sessions and kept events home (merge.lua, or kept
//     again by stash.lua when they still have none) and drop what arrived.
//     Kept presence is dropped only when step 3 found the device placed
//     in that workspace still: when a placement on another replica raced
//     this one in between, it stays kept for that placement to carry.
//
// A crash between steps leaves the device listed in two workspaces (step 2
// done in the new one, not yet in the old), or sessions counted nowhere,
// waiting in tombstones (between 2 and 4), but never loses them: the
// redelivered placement (or any other placement of the device) runs every
// step again. An event meanwhile is refused by a
// workspace whose record says it is not the event's home (apply.lua:
// rNotHere) and routed again from the index; a workspace the index names
// but whose record lags behind is brought in step first.
//
// Sessions of a device with more than one placement may be met in two
// workspaces (a late start with an end homed elsewhere): after such an
// event Go reads every copy, turns the ones away from home into tombstones
// and merges all into the home (apply.go: reuniteAll). The merge checks the
// home against its own record, so a router with an old history cannot put
// a session in the wrong place for good: the workspace's next sync moves it.
//
// Global keys (one slot each, never touched by the per-event scripts):
//
//	fl:workspaces         zset  every known workspace id, by when it was first
//	                             seen (ms): the stable order of the metrics' label cap
//	fl:key:SHA256HEX      hash  API key by the SHA-256 of the key: id, ws, name, ro, c, u, rv
//	fl:keyid:ID           string key id → SHA256HEX
//	fl:replays            zset  devices with sessions left to move home, by how
//	                             often they were listed (replay.go)
//
// Ids are validated to [A-Za-z0-9._:@-]{1,128} before they get here, so they
// can never close a hash tag or collide with a separator.
// Key name suffixes, after a workspace's prefix fl:{w:W}: or an index
// bucket's fl:{d:B}:, and hash fields, as the schema above spells them.
// The scripts get them as constants (prelude: K_*, H_*), so no other
// place spells a key.
const (
	kDev      = "dev"
	kSec      = "sec"
	kDevs     = "devs"
	kOn       = "on"
	kSS       = "ss"
	kHist     = "hist"
	kHD       = "hd:"
	kLive     = "live"
	kEnds     = "ends"
	kHS       = "hs:"
	kSecD     = "secd"
	kAct      = "act:"
	kTot      = "tot"
	kSN       = "sn"
	kSNDay    = "sn:"
	kMem      = "mem"
	kMemIdx   = "memidx"
	kKeys     = "keys"
	kMV       = "mv:"
	kTmpUsage = "tmp:usage"
	kIdx      = "idx"
	kPend     = "pend:"
	kPQ       = "pq:"

	hSeconds  = "s"  // tot: session seconds ever
	hEnded    = "e:" // tot: sessions ended, by status label
	hBuckets  = "b:" // sn: a day's bucket count
	hOnline   = "o"  // pend: presence
	hSeen     = "l"  // pend: last seen
	hSession  = "s:" // pend: a session
	hSessions = "n"  // pend: sessions kept
	hID       = "i:" // pend: a delivery id
	hIDs      = "ni" // pend: delivery ids kept
)

// keyConstants are the names of the constants above as the scripts see
// them, for the prelude.
var keyConstants = [][2]string{
	{"K_DEV", kDev}, {"K_SEC", kSec}, {"K_DEVS", kDevs}, {"K_ON", kOn}, {"K_SS", kSS}, {"K_HIST", kHist}, {"K_HD", kHD},
	{"K_LIVE", kLive}, {"K_ENDS", kEnds}, {"K_HS", kHS}, {"K_SECD", kSecD}, {"K_ACT", kAct}, {"K_TOT", kTot}, {"K_SN", kSN},
	{"K_SNDAY", kSNDay}, {"K_MEM", kMem}, {"K_MEMIDX", kMemIdx}, {"K_MV", kMV}, {"K_TMPUSAGE", kTmpUsage}, {"K_IDX", kIdx},
	{"K_PEND", kPend}, {"K_PQ", kPQ},
	{"H_SECONDS", hSeconds}, {"H_ENDED", hEnded}, {"H_BUCKETS", hBuckets}, {"H_ONLINE", hOnline}, {"H_SEEN", hSeen},
	{"H_SESSION", hSession}, {"H_SESSIONS", hSessions}, {"H_ID", hID}, {"H_IDS", hIDs},
}

const (
	keyPrefix      = "fl:"
	keyWorkspaces  = "fl:workspaces"
	keyReplays     = "fl:replays"
	deviceBuckets  = 4096
	pendingTTLDays = 7
)

// wsKey returns the key prefix of workspace ws: "fl:{w:ws}:".
func wsPrefix(ws string) string { return "fl:{w:" + ws + "}:" }

// wsDevKey is the routing key passed as KEYS[1] to per-workspace scripts;
// scripts derive the other names by stripping "dev".
func wsDevKey(ws string) string { return wsPrefix(ws) + kDev }

func wsKey(ws, name string) string { return wsPrefix(ws) + name }

// bucketOf returns the index bucket of a device.
func bucketOf(device string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(device))
	return h.Sum32() % deviceBuckets
}

// idxKey is the routing key of a device's index bucket, passed as KEYS[1] to
// the bucket scripts, which derive the other names by stripping "idx".
func idxKey(bucket uint32) string { return bucketPrefix(bucket) + kIdx }

// bucketPrefix is the key prefix of an index bucket, "fl:{d:B}:".
func bucketPrefix(bucket uint32) string {
	return "fl:{d:" + strconv.FormatUint(uint64(bucket), 16) + "}:"
}

// pendKey holds the events kept for device d (keep.lua).
func pendKey(d string) string {
	return bucketPrefix(bucketOf(d)) + kPend + d
}

func apiKeyKey(hashHex string) string { return "fl:key:" + hashHex }
func apiKeyIDKey(id string) string    { return "fl:keyid:" + id }
