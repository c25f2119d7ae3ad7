-- dedupe.lua: de-duplication by delivery id, for apply.lua, which calls
-- ddBegin with today's UTC day number (arrival time) and ddFinish at its
-- end. A delivery id arrives as a 12-byte digest (deliveryDigest) and is a
-- duplicate if it was marked today or yesterday: the window is 24-48 h. It
-- saves work and counts redeliveries; the state never depends on it, since
-- every event is idempotent by its content too.
--
-- Marks live in small hashes, fl:{w:W}:sn:DAY:K for K < B, the digest a
-- field with an empty value: a hash of up to 512 such fields (Redis 7's
-- hash-max-listpack-entries) is a listpack, about 16 bytes per id, where
-- a set of the ids themselves costs about 90. B is fixed per workspace
-- and day (field b:DAY of fl:{w:W}:sn), sized on the day's first mark
-- from yesterday's count (estimated from yesterday's bucket 0), or on a
-- workspace's first day from its devices (4 ids a device), for about 64
-- ids per bucket, so steady traffic stays compact and no bucket is a long
-- listpack to scan. A day with several times the expected traffic just
-- grows some buckets into ordinary hashes, as large as a set, never wrong.
--
-- What a workspace's day decided stays with its key names (wsk), which
-- the calls of the Functions library share: its bucket counts (fixed once
-- written), its bucket names, and which buckets this server gave their
-- expiry. So a call reads the counts only on a workspace's first call of
-- the day, and a bucket gets its EXPIRE once a day, not once a call. (A
-- script run by EVALSHA has them for one call, as before.) Should the keys
-- go behind the server's back (FLUSHALL, eviction), the worst is a missed
-- duplicate, or a bucket of that day without expiry.

local ddDay, ddToday, ddYesterday, ddRecent
local ddState = {} -- workspace prefix -> its day (K.dd), in this call

-- ddBegin starts a call's de-duplication on day (a number).
local function ddBegin(day)
  ddDay, ddToday, ddYesterday = day, num(day), num(day - 1)
  ddState = {}
  -- From when an event's first delivery cannot have arrived yesterday: ts
  -- is at most 1 h ahead of its arrival (the decoder's bound), so an event
  -- with a ts past today's 01:00 (02:00, for clocks that differ) first
  -- arrived today, and yesterday's marks need no look.
  ddRecent = day * DAY_MS + 7200000
end

local function ddOf(P)
  local s = ddState[P]
  if s then return s end
  local K = wsk(P)
  s = K.dd
  if not (s and s.day == ddDay) then
    s = {day = ddDay, meta = K.sn, a = K.snday .. ddToday, y = K.snday .. ddYesterday, ka = {}, ky = {}, ttl = {}, nttl = 0}
    K.dd = s
  end
  if not s.ba then
    local v = rcall('HMGET', s.meta, H_BUCKETS .. ddToday, H_BUCKETS .. ddYesterday)
    local ba, by = tonumber(v[1]), tonumber(v[2])
    s.fresh = not ba
    if s.fresh then
      -- ids expected today: yesterday's, else (a workspace's first day)
      -- 4 a registered device
      local ny
      if by then ny = rcall('HLEN', s.y .. ':0') * by else ny = rcall('HLEN', K.dev) * 4 end
      ba = 1
      while ba * 64 < ny and ba < 1048576 do ba = ba * 2 end
    end
    s.by = by or false
    s.ba = ba
  end
  s.marked = false
  ddState[P] = s
  return s
end

-- ddKey returns the name of the bucket of digest dg among b buckets of a
-- day named base, and its number; names are made once (cache).
local function ddKey(cache, base, dg, b)
  local n = 0
  if b > 1 then
    local x, y, z = byte(dg, 1, 3)
    n = (x * 65536 + y * 256 + z) % b
  end
  local k = cache[n]
  if not k then
    k = base .. ':' .. num(n)
    if n < 4096 then cache[n] = k end
  end
  return k, n
end

-- dup reports whether digest dg of an event with ts was marked today or
-- yesterday in workspace P, and marks it today when not.
local function dup(P, dg, ts)
  if dg == '' then return false end
  local s = ddOf(P)
  if s.by and ts < ddRecent and rcall('HEXISTS', (ddKey(s.ky, s.y, dg, s.by)), dg) == 1 then return true end
  local k, n = ddKey(s.ka, s.a, dg, s.ba)
  if rcall('HSETNX', k, dg, '') == 0 then return true end
  if not s.ttl[n] then
    rcall('EXPIRE', k, DEDUPE_TTL_S)
    -- (a workspace of more than 4096 buckets forgets them past that)
    if s.nttl >= 4096 then s.ttl, s.nttl = {}, 0 end
    s.ttl[n], s.nttl = true, s.nttl + 1
  end
  s.marked = true
  return false
end

-- ddFinish records a new day's bucket count (dropping those of days no
-- longer checked); call it once at the end.
local function ddFinish()
  for _, s in pairs(ddState) do
    if s.fresh then
      if s.marked then
        rcall('HSET', s.meta, H_BUCKETS .. ddToday, num(s.ba))
        local old = {}
        for d = ddDay - 9, ddDay - 2 do old[#old + 1] = H_BUCKETS .. d end
        rcall('HDEL', s.meta, unpack(old))
        s.fresh = false
      else
        s.ba = nil -- not decided yet: read again
      end
    end
  end
end
