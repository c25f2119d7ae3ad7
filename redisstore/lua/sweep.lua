-- sweep.lua: housekeeping of one workspace, run at most once a minute per
-- workspace and replica (not on every commit): drops up to 64 session
-- records older than the retention. A record stays for 3 days after it was
-- last written, however old its ts, because it is what makes a redelivered
-- session event a duplicate. KEYS[1] = fl:{w:W}:dev. ARGV: now, live bound
-- ms, retention ms.
local P = string.sub(KEYS[1], 1, -4)
local now, bound, retention = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local old = redis.call('ZRANGEBYSCORE', P .. 'hist', '-inf', '(' .. fmt(now - retention), 'LIMIT', 0, 64)
for _, sid in ipairs(old) do
  local raw = redis.call('HGET', P .. 'ss', sid)
  local s = nil
  if raw then s = sget(raw) end
  if not (s and s.w and s.w > now - DEDUPE_TTL * 1000) then
    if s then
      redis.call('ZREM', P .. 'hd:' .. s.d, sid)
      if s.en then redis.call('ZREM', P .. 'hs:' .. slabel(s.s), sid) end
    end
    redis.call('HDEL', P .. 'ss', sid)
    redis.call('ZREM', P .. 'hist', sid)
    redis.call('ZREM', P .. 'ends', sid)
    redis.call('ZREM', P .. 'live', sid)
  end
end
return 0
