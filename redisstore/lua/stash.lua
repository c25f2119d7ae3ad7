-- stash.lua: keeps what is known of sessions that have no home (yet)
-- among the device's kept events (after a delete, or a registration that
-- turned out older than the session). KEYS[1] = fl:{d:B}:idx. ARGV: now,
-- the bound of kept sessions per device, then pairs of session id, content
-- (session record). Returns per session 0, or the device's placement
-- history when the session has a home after all (Go brings it there);
-- then, last, how many kept sessions were dropped for the bound.
local B = sub(KEYS[1], 1, -4)
local bound = tonumber(ARGV[2]) -- ARGV[1] is now
local out, dropped = {}, 0
for i = 3, #ARGV, 2 do
  local sid, inc = ARGV[i], sget(ARGV[i + 1])
  local pk = B .. K_PEND .. inc.d
  local f = H_SESSION .. sid
  local cur = rcall('HGET', pk, f)
  local j = inc
  if cur then j = sjoin(sget(cur), inc) end
  local h = rcall('HGET', KEYS[1], inc.d)
  if h and hhome(hparse(h), sat(j)) then
    out[#out + 1] = h
  else
    if not cur or not ssame(j, sget(cur)) then dropped = dropped + pkeep(B, inc.d, sid, j, not cur, bound) end
    local ts = j.en or j.st
    local l = tonumber(rcall('HGET', pk, H_SEEN) or '')
    if not l or ts > l then rcall('HSET', pk, H_SEEN, fmt(ts)) end
    out[#out + 1] = 0
  end
end
out[#out + 1] = dropped
return out
