-- sweep.lua: housekeeping of one workspace, run at most once a minute per
-- workspace and replica (not on every commit): drops up to 64 session
-- records older than the retention. A record stays for 3 days after it was
-- last written, however old its ts, because it is what makes a redelivered
-- session event a duplicate. KEYS[1] = fl:{w:W}:dev. ARGV: now, live bound
-- ms, retention ms.
local P = sub(KEYS[1], 1, -4)
local now, retention = tonumber(ARGV[1]), tonumber(ARGV[3]) -- ARGV[2], the live bound, is not needed here
local old = rcall('ZRANGEBYSCORE', P .. K_HIST, '-inf', '(' .. fmt(now - retention), 'LIMIT', 0, 64)
for _, sid in ipairs(old) do
  local raw = rcall('HGET', P .. K_SS, sid)
  local s = nil
  if raw then s = sget(raw) end
  local w = s and tonumber(s._w)
  if not (w and w > now - DEDUPE_TTL * 1000) then
    if s then
      rcall('ZREM', P .. K_HD .. s.d, sid)
      if s.en then rcall('ZREM', P .. K_HS .. slabel(s.s), sid) end
    end
    rcall('HDEL', P .. K_SS, sid)
    rcall('ZREM', P .. K_HIST, sid)
    rcall('ZREM', P .. K_ENDS, sid)
    rcall('ZREM', P .. K_LIVE, sid)
  end
end
return 0
