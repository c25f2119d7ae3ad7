-- usage.lua: the usage of [from, to): whole UTC days from the daily
-- aggregates, the partial days at either end from the ended sessions
-- themselves. Returns seconds, active devices, registered devices.
-- KEYS[1] = fl:{w:W}:dev. ARGV: from ms, to ms, now ms, live bound ms.
local P = sub(KEYS[1], 1, -4)
local from, to, now, bound = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tmp = P .. K_TMPUSAGE
rcall('DEL', tmp)
local secs = 0
local function scan(a, b)
  local sids = rcall('ZRANGEBYSCORE', P .. K_ENDS, fmt(a), '(' .. fmt(b))
  for _, sid in ipairs(sids) do
    local raw = rcall('HGET', P .. K_SS, sid)
    if raw then
      local s = sget(raw)
      if not s.tomb and s.en then
        secs = secs + sdur(s)
        rcall('SADD', tmp, s.d)
      end
    end
  end
end
local fd, td = math.ceil(from / DAY_MS), floor(to / DAY_MS)
if fd < td then
  local days, sets = {}, {}
  for d = fd, td - 1 do
    days[#days + 1] = fmt(d)
    sets[#sets + 1] = P .. K_ACT .. fmt(d)
    if #days == 500 or d == td - 1 then
      for _, v in ipairs(rcall('HMGET', P .. K_SECD, unpack(days))) do
        if v then secs = secs + tonumber(v) end
      end
      sets[#sets + 1] = tmp
      rcall('SUNIONSTORE', tmp, unpack(sets))
      days, sets = {}, {}
    end
  end
  if from < fd * DAY_MS then scan(from, fd * DAY_MS) end
  if td * DAY_MS < to then scan(td * DAY_MS, to) end
else
  scan(from, to)
end
if from <= now and now < to then
  local sids = rcall('ZRANGEBYSCORE', P .. K_LIVE, fmt(now - bound), '+inf')
  for _, sid in ipairs(sids) do
    local raw = rcall('HGET', P .. K_SS, sid)
    if raw then
      local s = sget(raw)
      if not s.tomb then rcall('SADD', tmp, s.d) end
    end
  end
end
local active = rcall('SCARD', tmp)
rcall('DEL', tmp)
return {secs, active, rcall('ZCARD', P .. K_DEVS)}
