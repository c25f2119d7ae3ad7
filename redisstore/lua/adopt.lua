-- adopt.lua: merges presence and last seen into devices placed in this
-- workspace now, by the ordering rules (step 3 of a placement; also the
-- last seen of events applied at a session's home elsewhere).
-- KEYS[1] = fl:{w:W}:dev. ARGV: quadruples of device, online ("0"/"1",
-- "" for none), online ts, last seen ("" for none). A device not placed
-- here now is skipped. Returns per device 1 when it is placed here, 0
-- when it was skipped (a placement raced this one: what was carried
-- must stay kept for that placement to carry).
local P = sub(KEYS[1], 1, -4)
local W = wsOf(P)
local out = {}
for i = 1, #ARGV, 4 do
  local d = ARGV[i]
  local raw = rcall('HGET', KEYS[1], d)
  out[#out + 1] = 0
  if raw then
    local v = dget(raw)
    if v.h == '' or howner(hparse(v.h)) == W then
      out[#out] = 1
      local changed = false
      if ARGV[i + 1] ~= '' then
        local on, ot = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
        if pnewer(v, ot, on) > 0 then
          v.on, v.ot, changed = on, ot, true
          if on == 1 then rcall('ZADD', P .. K_ON, '0', d) else rcall('ZREM', P .. K_ON, d) end
        end
      end
      local ls = opt(ARGV[i + 3])
      if ls and (v.ls == nil or ls > v.ls) then v.ls, changed = ls, true end
      if changed then rcall('HSET', KEYS[1], d, dput(v)) end
    end
  end
end
return out
