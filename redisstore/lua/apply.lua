-- apply.lua: the hot path. Applies presence changes and session events of
-- registered devices. On a single Redis one call carries the events of
-- many workspaces (the fixed cost of a call is paid once per group
-- commit); on a cluster a call carries one workspace, since a script may
-- only touch one slot. KEYS[1] = fl:{w:W}:dev of the first event's
-- workspace (routing only).
-- ARGV: now, day, live bound ms, retention ms, then 8 fields per event:
-- workspace key prefix, type, delivery id digest, ts, device, session,
-- x (online "1"/"0", or status), durationSec ("" when absent).
-- Returns one code per event: a result (R_ACCEPTED, R_DUPLICATE,
-- R_STALE), or R_NOTHERE (the event's home is not this workspace; nothing
-- was written for it), or R_MOVED (the session lives elsewhere now; its
-- content, this event's included, waits in a tombstone here), plus the
-- flags F_MULTI (the device has moved or been deleted: Go checks the
-- session's other copies) and F_ELSEWHERE (applied here while the device
-- is placed in another workspace: Go raises its last seen there).

local now = tonumber(ARGV[1])
local bound, retention = tonumber(ARGV[3]), tonumber(ARGV[4])

-- Check everything before writing anything, so that a bad argument fails
-- the call with nothing applied.
local evs = {}
for i = 5, #ARGV, 8 do
  local e = {P = ARGV[i], typ = tonumber(ARGV[i + 1]), id = ARGV[i + 2], ts = tonumber(ARGV[i + 3]),
    d = ARGV[i + 4], sid = ARGV[i + 5], x = ARGV[i + 6], gd = opt(ARGV[i + 7])}
  if not (e.typ and e.ts and (ARGV[i + 7] == '' or e.gd)) or e.gd and (e.gd < 0 or e.gd > MAX_DURATION) then
    return redis.error_reply('ERR fleetd: malformed event ' .. ((i - 5) / 8))
  end
  evs[#evs + 1] = e
end
if not (now and bound and retention) then return redis.error_reply('ERR fleetd: malformed arguments') end

local out = {}
for k, e in ipairs(evs) do
  local P, d, ts = e.P, e.d, e.ts
  local DEV = P .. 'dev'
  local W = wsOf(P)
  local raw = redis.call('HGET', DEV, d)
  local r = R_NOTHERE
  if raw then
    local dev = dget(raw)
    local hl = nil -- nil: only its registration here (owner and home for all time)
    if dev.h ~= '' then hl = hparse(dev.h) end
    local owner = (hl == nil) or howner(hl) == W
    local flags = 0
    if hl then
      flags = F_MULTI
      if not owner then flags = flags + F_ELSEWHERE end
    end
    local iddup = false
    if e.typ == T_ONLINE then
      if owner then
        if dup(P, e.id) then
          r, iddup = R_DUPLICATE, true
        else
          local on = 0
          if e.x == '1' then on = 1 end
          local c = pnewer(dev, ts, on)
          if c < 0 then
            r = R_STALE
          elseif c == 0 then
            r = R_ACCEPTED -- the same presence under another id
          else
            r = R_ACCEPTED
            if on ~= dev.on then
              if on == 1 then redis.call('ZADD', P .. 'on', 0, d) else redis.call('ZREM', P .. 'on', d) end
            end
            dev.on, dev.ot = on, ts
          end
          lsmax(dev, ts)
          redis.call('HSET', DEV, d, dput(dev))
        end
        r = r + flags
      end
    else
      local SS = P .. 'ss'
      local sraw = redis.call('HGET', SS, e.sid)
      local old = nil
      if sraw then old = sget(sraw) end
      local inc = {d = d, w = now}
      if e.typ == T_STARTED then
        inc.st = ts
      else
        inc.en, inc.gd, inc.s = ts, e.gd, e.x
      end
      if old and old.tomb then
        -- Moved: keep what this event adds in the tombstone, for Go to
        -- bring to the session's home.
        local j = sjoin(old, inc)
        if skey(j) ~= skey(old) then stomb(P, e.sid, nil, j, old.tomb, now, bound, retention) end
        r = R_MOVED + flags
      elseif old then
        local j = sjoin(old, inc)
        if dup(P, e.id) then
          r, iddup = R_DUPLICATE + flags, true
        elseif skey(j) == skey(old) then
          r = R_DUPLICATE + flags
        elseif hl and hhome(hl, sat(j)) ~= W then
          -- The start moved the session's home elsewhere.
          stomb(P, e.sid, old, j, hhome(hl, sat(j)), now, bound, retention)
          r = R_MOVED + flags
        else
          scount(P, e.sid, old, j, now, bound, retention)
          redis.call('HSET', SS, e.sid, sput(j))
          r = R_ACCEPTED + flags
        end
      elseif not hl or hhome(hl, sat(inc)) == W then
        if dup(P, e.id) then
          r, iddup = R_DUPLICATE + flags, true
        else
          scount(P, e.sid, nil, inc, now, bound, retention)
          redis.call('HSET', SS, e.sid, sput(inc))
          r = R_ACCEPTED + flags
        end
      end
      -- Last seen counts every event about the device but a redelivery.
      if r ~= R_NOTHERE and not iddup and ts ~= dev.ls then
        local ls = dev.ls
        lsmax(dev, ts)
        if dev.ls ~= ls then redis.call('HSET', DEV, d, dput(dev)) end
      end
    end
  end
  out[k] = r
end
ddFinish()
return out
