-- dedupe.lua: de-duplication by delivery id in the workspace scripts,
-- whose ARGV[2] is today's UTC day number (arrival time). A delivery id
-- arrives as a 12-byte digest (deliveryDigest) and is a duplicate if it
-- was marked today or yesterday: the window is 24-48 h. It saves work and
-- counts redeliveries; the state never depends on it, since every event is
-- idempotent by its content too.
--
-- Marks live in small hashes, fl:{w:W}:sn:DAY:K for K < B, the digest a
-- field with an empty value: a hash of up to 128 such fields is a Redis
-- listpack, about 16 bytes per id, where a set of the ids themselves costs
-- about 90. B is fixed per workspace and day (field b:DAY of fl:{w:W}:sn),
-- sized on the day's first mark from yesterday's count (estimated from
-- yesterday's bucket 0) for about 64 ids per bucket, so steady traffic
-- stays compact. A day with several times yesterday's traffic just grows
-- some buckets into ordinary hashes, as large as a set, never wrong.

local ddDay = tonumber(ARGV[2])
local ddToday, ddYesterday = num(ddDay), num(ddDay - 1)
local ddState = {} -- workspace prefix -> its day's buckets
local function ddOf(P)
  local s = ddState[P]
  if s then return s end
  local K = wsk(P)
  local meta = K.sn
  local v = rcall('HMGET', meta, H_BUCKETS .. ddToday, H_BUCKETS .. ddYesterday)
  local ba, by = tonumber(v[1]), tonumber(v[2])
  local y = K.snday .. ddYesterday
  local fresh = not ba
  if fresh then
    local ny = 0
    if by then ny = rcall('HLEN', y .. ':0') * by end
    ba = 1
    while ba * 64 < ny and ba < 1048576 do ba = ba * 2 end
  end
  s = {meta = meta, a = K.snday .. ddToday, ba = ba, ka = {}, fresh = fresh, y = y, by = by, ky = {}, marked = false, exp = {}}
  ddState[P] = s
  return s
end

-- ddKey returns the name of the bucket of digest dg among b buckets of a
-- day named base; names are built once per call (cache).
local function ddKey(cache, base, dg, b)
  local n = 0
  if b > 1 then
    local x, y, z = byte(dg, 1, 3)
    n = (x * 65536 + y * 256 + z) % b
  end
  local k = cache[n]
  if not k then
    k = base .. ':' .. num(n)
    cache[n] = k
  end
  return k
end

-- ddRecent is from when an event's first delivery cannot have arrived
-- yesterday: ts is at most 1 h ahead of its arrival (the decoder's bound),
-- so an event with a ts past today's 01:00 (02:00, for clocks that differ)
-- first arrived today, and yesterday's marks need no look.
local ddRecent = ddDay * DAY_MS + 7200000

-- dup reports whether digest dg of an event with ts was marked today or
-- yesterday in workspace P, and marks it today when not.
local function dup(P, dg, ts)
  if dg == '' then return false end
  local s = ddOf(P)
  if s.by and ts < ddRecent and rcall('HEXISTS', ddKey(s.ky, s.y, dg, s.by), dg) == 1 then return true end
  local k = ddKey(s.ka, s.a, dg, s.ba)
  if rcall('HSETNX', k, dg, '') == 0 then return true end
  if not s.exp[k] then
    rcall('EXPIRE', k, DEDUPE_TTL_S)
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
      rcall('HSET', s.meta, H_BUCKETS .. ddToday, num(s.ba))
      local old = {}
      for d = ddDay - 9, ddDay - 2 do old[#old + 1] = H_BUCKETS .. d end
      rcall('HDEL', s.meta, unpack(old))
    end
  end
end
