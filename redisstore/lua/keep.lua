-- keep.lua: keeps events of devices that have no home for them yet (never
-- registered, or deleted before the event, with no registration after),
-- in the device's index bucket. KEYS[1] = the index bucket of the first
-- event's device (routing; one call carries many buckets on a single
-- Redis, one on a cluster). ARGV: now, the bound of kept sessions per
-- device, then 8 fields per event: the
-- bucket's key prefix ("fl:{d:B}:"), type, delivery id digest, ts, device,
-- session, x (online "1"/"0", or status), durationSec ("" when absent).
-- Returns per event a result code (plus F_MULTI for a session event of a
-- device with a placement history), or the history when the device turns
-- out to have a home for the event (Go routes it there); then, last, how
-- many kept sessions were dropped for the bound.
--
-- fl:{d:B}:pend:D holds, for device D: "o" the presence "ON,OT" that
-- decides, "l" the last seen ts, and "s:SID" what is known of session SID
-- (the session record codec), and "i:DIGEST" per delivery id kept, for
-- de-duplication. It lives for 7 days after its last event.

local now, bound = tonumber(ARGV[1]), tonumber(ARGV[2])
local evs = {}
for i = 3, #ARGV, 8 do
  local e = {B = ARGV[i], typ = tonumber(ARGV[i + 1]), id = ARGV[i + 2], ts = tonumber(ARGV[i + 3]), d = ARGV[i + 4],
    sid = ARGV[i + 5], x = ARGV[i + 6], gd = opt(ARGV[i + 7])}
  if not (e.typ and e.ts and (ARGV[i + 7] == '' or e.gd)) then
    return redis.error_reply('ERR fleetd: malformed event ' .. ((i - 3) / 8))
  end
  evs[#evs + 1] = e
end

local out, dropped = {}, 0
for k, e in ipairs(evs) do
  local pk = e.B .. K_PEND .. e.d
  local h = rcall('HGET', e.B .. K_IDX, e.d)
  local hl = nil
  if h then hl = hparse(h) end
  local r
  local idf = nil -- presence only: a session event is a duplicate by what it says
  if e.id ~= '' and e.typ == T_ONLINE then idf = H_ID .. e.id end
  local iddup = idf and rcall('HEXISTS', pk, idf) == 1
  if iddup then
    r = R_DUPLICATE
  elseif e.typ == T_ONLINE then
    if hl and howner(hl) then
      r = h
    else
      local on = 0
      if e.x == '1' then on = 1 end
      local cur = rcall('HGET', pk, H_ONLINE)
      local v = {on = 0, ot = nil}
      if cur then
        local con, cot = string.match(cur, '^(%d),(%-?%d+)$')
        v.on, v.ot = tonumber(con), tonumber(cot)
      end
      local c = pnewer(v, e.ts, on)
      if c > 0 then
        rcall('HSET', pk, H_ONLINE, on .. ',' .. fmt(e.ts))
        r = R_ACCEPTED
      elseif c == 0 then
        r = R_ACCEPTED -- the same presence under another id
      else
        r = R_STALE
      end
    end
  else
    local f = H_SESSION .. e.sid
    local cur = rcall('HGET', pk, f)
    local inc = {d = e.d, w = now}
    if e.typ == T_STARTED then inc.st = e.ts else inc.en, inc.gd, inc.s = e.ts, e.gd, e.x end
    local j = inc
    if cur then j = sjoin(sget(cur), inc) end
    if hl and hhome(hl, sat(inc)) then
      r = h -- Go routed by a stale history
    elseif cur and ssame(j, sget(cur)) then
      r = R_DUPLICATE
    else
      dropped = dropped + pkeep(e.B, e.d, e.sid, j, not cur, bound)
      r = R_ACCEPTED
    end
  end
  if type(r) == 'number' and not iddup then
    -- Delivery ids are kept for as many events as sessions are.
    if idf and rcall('HINCRBY', pk, H_IDS, '1') <= bound then rcall('HSET', pk, idf, '') end
    local l = tonumber(rcall('HGET', pk, H_SEEN) or '')
    if not l or e.ts > l then rcall('HSET', pk, H_SEEN, fmt(e.ts)) end
    rcall('PEXPIRE', pk, PENDING_TTL_MS_S)
  end
  -- A session kept while the device has a history may have copies in its
  -- workspaces, or a home by a start kept earlier that this event alone
  -- does not have (its move home waits for a replay step): Go checks and
  -- brings it home (F_MULTI).
  if type(r) == 'number' and hl and e.typ ~= T_ONLINE then r = r + F_MULTI end
  out[k] = r
end
out[#out + 1] = dropped
return out
