-- merge.lua: brings what is known of sessions to their home here (a
-- session moving after a placement, kept events, or copies of one session
-- found in two workspaces). KEYS[1] = fl:{w:W}:dev. ARGV: now, live bound
-- ms, retention ms, then pairs of session id, content (session record).
-- Returns per session {code, content}: R_ACCEPTED or R_DUPLICATE when it
-- is home here now; R_NOTHERE when this workspace knows the device but the
-- session's home is elsewhere (content: all that is known, to bring
-- there), R_MOVED the same after it turned the copy here into a tombstone;
-- R_NOTHERE with "" when the device has no record here (sync first).
local P = sub(KEYS[1], 1, -4)
local W = wsOf(P)
local now, retention = tonumber(ARGV[1]), tonumber(ARGV[3]) -- ARGV[2]: the live bound (not needed here)
local out = {}
for i = 4, #ARGV, 2 do
  local sid, inc = ARGV[i], sget(ARGV[i + 1])
  local raw = rcall('HGET', KEYS[1], inc.d)
  if not raw then
    out[#out + 1] = {R_NOTHERE, ''}
  else
    local v = dget(raw)
    local hl = dhist(v, W)
    local sraw = rcall('HGET', P .. K_SS, sid)
    local old, j = nil, inc
    if sraw then
      old = sget(sraw)
      j = sjoin(old, inc)
    end
    j.w = now
    local home = hhome(hl, sat(j))
    if home ~= W then
      if old and not old.tomb then
        stomb(P, sid, old, j, home, retention)
        out[#out + 1] = {R_MOVED, sput(j)}
      else
        if old and not ssame(j, old) then stomb(P, sid, nil, j, old.tomb, retention) end
        out[#out + 1] = {R_NOTHERE, sput(j)}
      end
    else
      local counted = nil
      if old and not old.tomb then counted = old end
      if counted and ssame(j, counted) then
        out[#out + 1] = {R_DUPLICATE, ''}
      else
        scount(P, sid, counted, j, retention)
        rcall('HSET', P .. K_SS, sid, sput(j))
        if old and old.tomb then rcall('SREM', P .. K_MV .. j.d, sid) end
        local ls = v.ls
        lsmax(v, j.st)
        lsmax(v, j.en)
        if v.ls ~= ls then rcall('HSET', KEYS[1], inc.d, dput(v)) end
        out[#out + 1] = {R_ACCEPTED, ''}
      end
    end
  end
end
return out
