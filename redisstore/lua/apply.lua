-- apply.lua: the hot path. Applies presence changes and session events of
-- registered devices. On a single Redis one call carries the events of
-- many workspaces (the fixed cost of a call is paid once per group
-- commit); on a cluster a call carries one workspace, since a script may
-- only touch one slot. KEYS[1] = fl:{w:W}:dev of the first event's
-- workspace (routing only).
-- ARGV: now, retention ms, then 9 fields per event:
-- workspace key prefix, type, delivery id digest, ts, device, session,
-- x (online "1"/"0", or status), durationSec ("" when absent), and ts in
-- base 36 (the device record's text of it).
-- Returns one code per event: a result (R_ACCEPTED, R_DUPLICATE,
-- R_STALE), or R_NOTHERE (the event's home is not this workspace; nothing
-- was written for it), or R_MOVED (the session lives elsewhere now; its
-- content, this event's included, waits in a tombstone here), plus the
-- flags F_MULTI (the device has moved or been deleted: Go checks the
-- session's other copies) and F_ELSEWHERE (applied here while the device
-- is placed in another workspace: Go raises its last seen there).
--
-- Only presence changes are de-duplicated by delivery id: a session event
-- that changes nothing is a duplicate by what it says (the session already
-- has that start, or an end).

local now, retention = tonumber(ARGV[1]), tonumber(ARGV[2])

-- Check everything before writing anything, so that a bad argument fails
-- the call with nothing applied.
local n = (#ARGV - 2) / 9
local ts = {} -- each event's ts and durationSec (false: none), side by side
for k = 1, n do
  local i = 3 + (k - 1) * 9
  local t, typ, gd = tonumber(ARGV[i + 3]), ARGV[i + 1], ARGV[i + 7]
  local g = gd ~= '' and tonumber(gd)
  if not t or typ ~= T_ONLINE_S and typ ~= T_STARTED_S and typ ~= T_ENDED_S or g == nil or g and (g < 0 or g > MAX_DURATION) then
    return redis.error_reply('ERR fleetd: malformed event ' .. (k - 1))
  end
  ts[2 * k - 1], ts[2 * k] = t, g
end
if not (now and retention) then return redis.error_reply('ERR fleetd: malformed arguments') end
ddBegin((now - now % DAY_MS) / DAY_MS)

local out = {}
local lastP, W, DEV, SS, ON = nil, nil, nil, nil, nil
for k = 1, n do
  local i = 3 + (k - 1) * 9
  local P, typ, d = ARGV[i], ARGV[i + 1], ARGV[i + 4]
  local t, tss, t36 = ts[2 * k - 1], ARGV[i + 3], ARGV[i + 8]
  if P ~= lastP then
    local K = wsk(P)
    lastP, W, DEV, SS, ON = P, wsOf(P), K.dev, K.ss, K.on
  end
  local raw = rcall('HGET', DEV, d)
  local r = R_NOTHERE
  if raw then
    local ons, ots, lss, q, rgs, h = match(raw, DPAT)
    -- A device that never moved (most) is read from its fields; one that
    -- did, as a record with its history.
    local dev, hl = nil, nil -- hl nil: only its registration here (owner and home for all time)
    if h ~= '' then dev, hl = dget(raw), hparse(h) end
    local owner = (hl == nil) or howner(hl) == W
    local flags = 0
    if hl then
      flags = F_MULTI
      if not owner then flags = flags + F_ELSEWHERE end
    end
    if typ == T_ONLINE_S then
      if owner then
        local on = 0
        if ARGV[i + 6] == '1' then on = 1 end
        if dup(P, ARGV[i + 2], t) then
          r = R_DUPLICATE
        elseif not dev then
          local rec, flip
          r, rec, flip = dpresence(raw, ons, ots, lss, q, rgs, on, t, t36)
          if flip then
            if on == 1 then rcall('ZADD', ON, '0', d) else rcall('ZREM', ON, d) end
          end
          if rec then rcall('HSET', DEV, d, rec) end
        else
          local c = pnewer(dev, t, on)
          if c < 0 then
            r = R_STALE
          elseif c == 0 then
            r = R_ACCEPTED -- the same presence under another id
          else
            r = R_ACCEPTED
            if on ~= dev.on then
              if on == 1 then rcall('ZADD', ON, '0', d) else rcall('ZREM', ON, d) end
            end
            dev.on, dev.ot, dev._ot, dev._otn = on, t, t36, t
          end
          lsmax(dev, t, t36)
          rcall('HSET', DEV, d, dput(dev))
        end
        r = r + flags
      end
    else
      local sid = ARGV[i + 5]
      local inc
      if typ == T_STARTED_S then
        inc = {d = d, w = now, _w = ARGV[1], _wn = now, st = t, _st = tss, _stn = t}
      else
        local gd, gds = ts[2 * k] or nil, nil
        if gd then gds = ARGV[i + 7] end
        inc = {d = d, w = now, _w = ARGV[1], _wn = now, en = t, _en = tss, _enn = t, s = ARGV[i + 6],
          gd = gd, _gd = gds, _gdn = gd}
      end
      local old, written = nil, false
      if typ == T_STARTED_S and not hl then
        -- Most starts are of a session not seen yet, at home here: write it
        -- at once, and read what is there only when something is.
        written = rcall('HSETNX', SS, sid, sput(inc)) == 1
        if not written then old = sget(rcall('HGET', SS, sid)) end
      else
        local sraw = rcall('HGET', SS, sid)
        if sraw then old = sget(sraw) end
      end
      if old and old.tomb then
        -- Moved: keep what this event adds in the tombstone, for Go to
        -- bring to the session's home.
        local j = sjoinInto(inc, old)
        if not ssame(j, old) then stomb(P, sid, nil, j, old.tomb, retention) end
        r = R_MOVED + flags
      elseif old then
        local j = sjoinInto(inc, old)
        if ssame(j, old) then
          r = R_DUPLICATE + flags
        elseif hl and hhome(hl, sat(j)) ~= W then
          -- The start moved the session's home elsewhere.
          stomb(P, sid, old, j, hhome(hl, sat(j)), retention)
          r = R_MOVED + flags
        else
          scount(P, sid, old, j, retention)
          rcall('HSET', SS, sid, sput(j))
          r = R_ACCEPTED + flags
        end
      elseif not hl or hhome(hl, sat(inc)) == W then
        scount(P, sid, nil, inc, retention)
        if not written then rcall('HSET', SS, sid, sput(inc)) end
        r = R_ACCEPTED + flags
      end
      -- Last seen counts every event about the device (applied here).
      if r ~= R_NOTHERE and not dev then
        local rec = dseenat(raw, ons, ots, lss, q, rgs, t, t36)
        if rec then rcall('HSET', DEV, d, rec) end
      elseif r ~= R_NOTHERE and lsmax(dev, t, t36) then
        rcall('HSET', DEV, d, dput(dev))
      end
    end
  end
  out[k] = r
end
ddFinish()
return out
