-- month_usage.lua: usage.lua for exactly one UTC calendar month, read
-- from the per-month totals without scanning or writing anything.
-- KEYS[1] = fl:{w:W}:dev. ARGV: month (months since 1970-01), whether the
-- month contains now ("1"/"0"), now ms, live bound ms.
local P = string.sub(KEYS[1], 1, -4)
local act = P .. 'actm:' .. ARGV[1]
local secs = tonumber(redis.call('HGET', P .. 'secm', ARGV[1]) or '0')
local active = redis.call('SCARD', act)
if ARGV[2] == '1' then
  local now, bound = tonumber(ARGV[3]), tonumber(ARGV[4])
  local extra = {}
  for _, sid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'live', fmt(now - bound), '+inf')) do
    local raw = redis.call('HGET', P .. 'ss', sid)
    if raw then
      local s = sget(raw)
      if not s.tomb and not extra[s.d] and redis.call('SISMEMBER', act, s.d) == 0 then
        extra[s.d] = true
        active = active + 1
      end
    end
  end
end
return {secs, active, redis.call('ZCARD', P .. 'devs')}
