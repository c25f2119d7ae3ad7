package redisstore

import "github.com/redis/go-redis/v9"

// Result codes returned by the scripts, per event.
const (
	rAccepted  = 0
	rDuplicate = 1
	rStale     = 2
	rNotHere   = 9 // the device is not registered in that workspace
)

// Event type codes as the scripts see them (fleet.EventType values).
//   2 online changed, 3 deleted, 4 session started, 5 session ended.

// codecLua encodes the records without cjson, which dominated the cost of
// an event: a device is "ON,OT,LS,RT;" + the JSON of its cold fields
// {n,o,u} (name, os, user), written by Go and never parsed here on the hot
// path; a session is "DEVICE,START,END,DURATION,WRITTEN,STATUS" with
// START, END, DURATION empty when unknown (ids cannot contain ','; STATUS
// is last, so it may).
const codecLua = `
local function dget(raw)
  local on, ot, ls, rt, p = string.match(raw, '^(%d),(%d+),(%d+),(%d+);()')
  return {on = tonumber(on), ot = tonumber(ot), ls = tonumber(ls), rt = rt, cold = string.sub(raw, p)}
end
local function num(x)
  if x then return string.format('%d', x) end
  return ''
end
local function dput(v)
  return v.on .. ',' .. num(v.ot) .. ',' .. num(v.ls) .. ',' .. v.rt .. ';' .. v.cold
end
local function sget(raw)
  local d, st, en, du, w, status = string.match(raw, '^([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),(.*)$')
  return {d = d, st = tonumber(st), en = tonumber(en), du = tonumber(du), w = tonumber(w), s = status}
end
-- monthOf returns the UTC calendar month of a time in ms, as months since
-- 1970-01 (civil-from-days, H. Hinnant): usage of a whole month is read
-- from per-month totals.
local function monthOf(ms)
  local z = math.floor(ms / 86400000) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m, y = mp + 3, yoe + era * 400
  if mp >= 10 then m = mp - 9 end
  if m <= 2 then y = y + 1 end
  return (y - 1970) * 12 + m - 1
end
local function sput(v)
  return v.d .. ',' .. num(v.st) .. ',' .. num(v.en) .. ',' .. num(v.du) .. ',' .. num(v.w) .. ',' .. (v.s or '')
end
`

// seenLua de-duplicates the events that pendScript keeps for unregistered
// devices, by their raw ids in a set per index bucket and day. ARGV[2] is
// today's UTC day number (arrival time): a delivery id is a duplicate if it
// was seen today or yesterday, so the window is at least 24 h. Kept events
// are few; the firehose goes through dedupeLua.
const seenLua = `
local P = string.sub(KEYS[1], 1, -4)
local now = tonumber(ARGV[1])
local day = tonumber(ARGV[2])
local seenA = P .. 'seen:' .. day
local seenB = P .. 'seen:' .. (day - 1)
local seenAdded = false
local function seen(id)
  if id == '' then return false end
  return redis.call('SISMEMBER', seenA, id) == 1 or redis.call('SISMEMBER', seenB, id) == 1
end
local function mark(id)
  if id ~= '' then redis.call('SADD', seenA, id); seenAdded = true end
end
local function finish()
  if seenAdded then redis.call('EXPIRE', seenA, 259200) end
end
`

// dedupeLua is the de-duplication of the workspace scripts (applyScript,
// registerScript), whose ARGV[2] is today's UTC day number (arrival
// time). A delivery id arrives as a 12-byte digest (deliveryDigest) and is
// a duplicate if it was marked today or yesterday: the window is 24–48 h.
//
// Marks live in small hashes, fl:{w:W}:sn:DAY:K for K < B, the digest a
// field with an empty value: a hash of up to 128 such fields is a Redis
// listpack, about 16 bytes per id, where a set of the ids themselves costs
// about 90. B is fixed per workspace and day (field b:DAY of fl:{w:W}:sn),
// sized on the day's first mark from yesterday's count (estimated from
// yesterday's bucket 0) for about 64 ids per bucket, so steady traffic
// stays compact. A day with several times yesterday's traffic just grows
// some buckets into ordinary hashes, as large as a set, never wrong.
const dedupeLua = `
local ddDay = tonumber(ARGV[2])
local ddState = {} -- workspace prefix → its day's buckets
local function ddOf(P)
  local s = ddState[P]
  if s then return s end
  local meta = P .. 'sn'
  local v = redis.call('HMGET', meta, 'b:' .. ddDay, 'b:' .. (ddDay - 1))
  local ba, by = tonumber(v[1]), tonumber(v[2])
  local y = P .. 'sn:' .. (ddDay - 1)
  local fresh = not ba
  if fresh then
    local ny = 0
    if by then ny = redis.call('HLEN', y .. ':0') * by end
    ba = 1
    while ba * 64 < ny and ba < 1048576 do ba = ba * 2 end
  end
  s = {meta = meta, a = P .. 'sn:' .. ddDay, ba = ba, ka = {}, fresh = fresh, y = y, by = by, ky = {}, marked = false, exp = {}}
  ddState[P] = s
  return s
end
-- ddKey returns the name of the bucket of digest dg among b buckets of a
-- day named base; names are built once per call (cache).
local function ddKey(cache, base, dg, b)
  local n = 0
  if b > 1 then
    local x, y, z = string.byte(dg, 1, 3)
    n = (x * 65536 + y * 256 + z) % b
  end
  local k = cache[n]
  if not k then
    k = base .. ':' .. n
    cache[n] = k
  end
  return k
end
-- dup reports whether digest dg was marked today or yesterday in workspace
-- P, and marks it today when not.
local function dup(P, dg)
  if dg == '' then return false end
  local s = ddOf(P)
  if s.by and redis.call('HEXISTS', ddKey(s.ky, s.y, dg, s.by), dg) == 1 then return true end
  local k = ddKey(s.ka, s.a, dg, s.ba)
  if redis.call('HSETNX', k, dg, '') == 0 then return true end
  if not s.exp[k] then
    redis.call('EXPIRE', k, 259200)
    s.exp[k] = true
  end
  s.marked = true
  return false
end
-- ddFinish records a new day's bucket count (dropping those of days no
-- longer checked); call it once at the end.
local function ddFinish()
  for _, s in pairs(ddState) do
    if s.fresh and s.marked then
      redis.call('HSET', s.meta, 'b:' .. ddDay, s.ba)
      local old = {}
      for d = ddDay - 9, ddDay - 2 do old[#old + 1] = 'b:' .. d end
      redis.call('HDEL', s.meta, unpack(old))
    end
  end
end
`

// applyScript applies events of registered devices. On a single Redis one
// call carries the events of many workspaces (the fixed cost of a script
// call is paid once per group commit, not once per workspace); on a
// cluster a call carries one workspace, since a script may only touch one
// slot. KEYS[1] = fl:{w:W}:dev of the first event's workspace (routing).
// ARGV: now, day, liveBoundMs, retentionMs, then 8 fields per event:
// workspace key prefix (fl:{w:W}:), type, id, ts, device, session, x
// (online "1"/"0" or status), duration (-1 when absent). Returns one code
// per event.
var applyScript = redis.NewScript(codecLua + dedupeLua + `
local now = tonumber(ARGV[1])
local liveBound, retention = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
local touched = {} -- prefix → true when a session ended there, false otherwise
local names = {}   -- prefix → its key names, built once per call
local function keysOf(P)
  local k = names[P]
  if not k then
    k = {dev = P .. 'dev', on = P .. 'on', ss = P .. 'ss', hist = P .. 'hist', live = P .. 'live'}
    names[P] = k
  end
  return k
end
for i = 5, #ARGV, 8 do
  local P, typ, id, ts, d = ARGV[i], ARGV[i+1], ARGV[i+2], tonumber(ARGV[i+3]), ARGV[i+4]
  local sid, x, dur = ARGV[i+5], ARGV[i+6], tonumber(ARGV[i+7])
  local K = keysOf(P)
  local DEV = K.dev
  local raw = redis.call('HGET', DEV, d)
  local r = 0
  if not raw then
    r = 9
  elseif dup(P, id) then
    r = 1
  else
    if touched[P] == nil then touched[P] = false end
    local dev = dget(raw)
    if typ == '2' then
      if ts < dev.ot then
        r = 2
      else
        dev.ot = ts
        local on = 0
        if x == '1' then on = 1 end
        if on ~= dev.on then
          dev.on = on
          if on == 1 then redis.call('ZADD', K.on, 0, d) else redis.call('ZREM', K.on, d) end
        end
      end
    elseif typ == '4' then
      local sraw = redis.call('HGET', K.ss, sid)
      if sraw then
        local s = sget(sraw)
        if s.en and not s.st then
          s.st = ts
          redis.call('HSET', K.ss, sid, sput(s))
          redis.call('ZADD', K.hist, ts, sid)
          redis.call('ZADD', P .. 'hd:' .. s.d, ts, sid)
        else
          r = 1
        end
      else
        redis.call('HSET', K.ss, sid, sput({d = d, st = ts, w = now}))
        redis.call('ZADD', K.hist, ts, sid)
        redis.call('ZADD', P .. 'hd:' .. d, ts, sid)
        if ts >= now - liveBound then redis.call('ZADD', K.live, ts, sid) end
      end
    elseif typ == '5' then
      local sraw = redis.call('HGET', K.ss, sid)
      local s = {d = d}
      if sraw then s = sget(sraw) end
      if s.en then
        r = 1
      else
        if dur < 0 then
          dur = 0
          if s.st and ts > s.st then dur = math.floor((ts - s.st) / 1000) end
        end
        s.en, s.du, s.s, s.w = ts, dur, x, now
        redis.call('HSET', K.ss, sid, sput(s))
        if s.st then
          redis.call('ZREM', K.live, sid)
        else
          -- Listed at its end minus its duration until its start arrives.
          local at = ts - dur * 1000
          redis.call('ZADD', K.hist, at, sid)
          redis.call('ZADD', P .. 'hd:' .. s.d, at, sid)
        end
        redis.call('ZADD', P .. 'ends', ts, sid)
        local eday = math.floor(ts / 86400000)
        redis.call('HINCRBY', P .. 'secd', eday, dur)
        local act = P .. 'act:' .. eday
        if redis.call('SADD', act, s.d) == 1 then
          redis.call('PEXPIREAT', act, (eday + 1) * 86400000 + retention)
        end
        local mon = string.format('%d', monthOf(ts))
        redis.call('HINCRBY', P .. 'secm', mon, dur)
        local actm = P .. 'actm:' .. mon
        if redis.call('SADD', actm, s.d) == 1 then
          redis.call('PEXPIREAT', actm, (eday + 32) * 86400000 + retention)
        end
        redis.call('HINCRBY', P .. 'tot', 'e:' .. x, 1)
        touched[P] = true
      end
    elseif typ == '3' then
      redis.call('HDEL', DEV, d)
      redis.call('ZREM', P .. 'devs', d)
      redis.call('ZREM', K.on, d)
      dev = nil
    end
    -- The record changes with an online change, or when the event is the
    -- newest about the device (last seen).
    if r == 0 and dev and (typ == '2' or ts > dev.ls) then
      if ts > dev.ls then dev.ls = ts end
      redis.call('HSET', DEV, d, dput(dev))
    end
  end
  out[#out + 1] = r
end
ddFinish()
for P, ended in pairs(touched) do
  redis.call('ZREMRANGEBYSCORE', P .. 'live', '-inf', '(' .. string.format('%d', now - liveBound))
  if ended then
    local old = redis.call('ZRANGEBYSCORE', P .. 'hist', '-inf', '(' .. string.format('%d', now - retention), 'LIMIT', 0, 32)
    for _, sid in ipairs(old) do
      local sraw = redis.call('HGET', P .. 'ss', sid)
      local s = sraw and sget(sraw) or {}
      -- A record is what makes a redelivered session.ended a duplicate, so
      -- it stays for 3 days after it was written, however old its ts.
      if not (s.w and s.w > now - 259200000) then
        if s.d then redis.call('ZREM', P .. 'hd:' .. s.d, sid) end
        redis.call('HDEL', P .. 'ss', sid)
        redis.call('ZREM', P .. 'hist', sid)
        redis.call('ZREM', P .. 'ends', sid)
        redis.call('ZREM', P .. 'live', sid)
      end
    end
  end
end
return out
`)

// registerScript registers devices in one workspace. KEYS[1] = fl:{w:W}:dev.
// ARGV: now, day, then 7 fields per event: id, ts, device, cold JSON
// ({n,o,u}, encoded by Go), carried online ("" when nothing is carried,
// else "0"/"1"), carried online ts, carried last seen. A device moved from
// another workspace carries its presence; a new one is offline. Returns
// one code per event.
var registerScript = redis.NewScript(dedupeLua + codecLua + `
local P = string.sub(KEYS[1], 1, -4)
local DEV = P .. 'dev'
local out = {}
for i = 3, #ARGV, 7 do
  local id, ts, d, cold = ARGV[i], tonumber(ARGV[i+1]), ARGV[i+2], ARGV[i+3]
  local con, cot, cls = ARGV[i+4], tonumber(ARGV[i+5]), tonumber(ARGV[i+6])
  local r = 0
  if dup(P, id) then
    r = 1
  else
    local raw = redis.call('HGET', DEV, d)
    local dev
    if raw then
      dev = dget(raw)
    else
      dev = {on = 0, ot = 0, ls = 0, rt = '0'}
      redis.call('ZADD', P .. 'devs', 0, d)
      if con ~= '' then
        dev.on, dev.ot, dev.ls = tonumber(con), cot, cls
        if dev.on == 1 then redis.call('ZADD', P .. 'on', 0, d) end
      end
    end
    dev.cold = cold
    if ts > dev.ls then dev.ls = ts end
    redis.call('HSET', DEV, d, dput(dev))
  end
  out[#out + 1] = r
end
ddFinish()
return out
`)

// evictScript removes devices that moved away from one workspace.
// KEYS[1] = fl:{w:W}:dev, ARGV: device ids.
var evictScript = redis.NewScript(`
local P = string.sub(KEYS[1], 1, -4)
local out = {}
for i, d in ipairs(ARGV) do
  out[i] = redis.call('HGET', KEYS[1], d)
  redis.call('HDEL', KEYS[1], d)
  redis.call('ZREM', P .. 'devs', d)
  redis.call('ZREM', P .. 'on', d)
end
return out
`)

// adoptScript merges presence into devices of one workspace by the rules
// of an online event: the newer online ts wins, last seen is the newest.
// KEYS[1] = fl:{w:W}:dev, ARGV: quadruples of device, online ("0"/"1"),
// online ts, last seen. A device not (or no longer) there is skipped.
var adoptScript = redis.NewScript(codecLua + `
local P = string.sub(KEYS[1], 1, -4)
for i = 1, #ARGV, 4 do
  local d, on, ot, ls = ARGV[i], tonumber(ARGV[i+1]), tonumber(ARGV[i+2]), tonumber(ARGV[i+3])
  local raw = redis.call('HGET', KEYS[1], d)
  if raw then
    local dev = dget(raw)
    if ot > dev.ot then
      dev.ot = ot
      if on ~= dev.on then
        dev.on = on
        if on == 1 then redis.call('ZADD', P .. 'on', 0, d) else redis.call('ZREM', P .. 'on', d) end
      end
    end
    if ls > dev.ls then dev.ls = ls end
    redis.call('HSET', KEYS[1], d, dput(dev))
  end
end
return 0
`)

// claimScript points devices at their workspace and returns the events kept
// for them while they were unregistered. KEYS[1] = fl:{d:B}:idx, ARGV: pairs
// of device, workspace. Returns per device a list of field, value pairs.
var claimScript = redis.NewScript(`
local P = string.sub(KEYS[1], 1, -4)
local out = {}
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1])
  out[#out + 1] = redis.call('HGETALL', P .. 'pend:' .. ARGV[i])
end
return out
`)

// unindexScript drops index entries that still name the given workspace.
// KEYS[1] = fl:{d:B}:idx, ARGV: pairs of device, workspace.
var unindexScript = redis.NewScript(`
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i+1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
`)

// unpendScript drops replayed kept events, only where they are unchanged.
// KEYS[1] = fl:{d:B}:idx, ARGV: triples of device, field, value.
var unpendScript = redis.NewScript(`
local P = string.sub(KEYS[1], 1, -4)
for i = 1, #ARGV, 3 do
  local k = P .. 'pend:' .. ARGV[i]
  if redis.call('HGET', k, ARGV[i+1]) == ARGV[i+2] then redis.call('HDEL', k, ARGV[i+1]) end
end
return 1
`)

// pendScript keeps events of devices that have no workspace yet.
// KEYS[1] = fl:{d:B}:idx. ARGV: now, day, then 8 fields per event: the 7 of
// applyScript plus the workspace that a stale index entry may still name
// (from an interrupted delete; "" for none). Returns per event a code, or the
// workspace id when the device turned out to be registered there.
var pendScript = redis.NewScript(seenLua + `
local out = {}
for i = 3, #ARGV, 8 do
  local typ, id, ts, d, sid = ARGV[i], ARGV[i+1], tonumber(ARGV[i+2]), ARGV[i+3], ARGV[i+4]
  local stale = ARGV[i+7]
  local ws = redis.call('HGET', KEYS[1], d)
  if ws and ws ~= stale then
    out[#out + 1] = ws
  else
    if ws then redis.call('HDEL', KEYS[1], d) end
    local r = 0
    if seen(id) then
      r = 1
    else
      local pk = P .. 'pend:' .. d
      local enc = cjson.encode({ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5], ARGV[i+6]})
      if typ == '3' then
        redis.call('DEL', pk)
      elseif typ == '2' then
        local cur = redis.call('HGET', pk, 'o')
        if cur and tonumber(cjson.decode(cur)[3]) > ts then
          r = 2
        else
          redis.call('HSET', pk, 'o', enc)
        end
      elseif typ == '4' then
        if redis.call('HSETNX', pk, 's:' .. sid .. ':b', enc) == 0 then r = 1 end
      elseif typ == '5' then
        if redis.call('HSETNX', pk, 's:' .. sid .. ':e', enc) == 0 then r = 1 end
      end
      if typ ~= '3' then redis.call('PEXPIRE', pk, 604800000) end
      if r ~= 1 then mark(id) end
    end
    out[#out + 1] = r
  end
end
finish()
return out
`)
