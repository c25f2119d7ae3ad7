-- tomb.lua: turns copies of sessions here into tombstones pointing at
-- their home, and returns what each held (a copy found while the session's
-- home is elsewhere). KEYS[1] = fl:{w:W}:dev. ARGV: now, live bound ms,
-- retention ms, then pairs of session id, home ("" for kept). Returns per
-- session its content, "" when there is none here.
local P = sub(KEYS[1], 1, -4)
local retention = tonumber(ARGV[3]) -- ARGV[1], ARGV[2]: now, the live bound (not needed here)
local out = {}
for i = 4, #ARGV, 2 do
  local sid = ARGV[i]
  local sraw = rcall('HGET', P .. K_SS, sid)
  if not sraw then
    out[#out + 1] = ''
  else
    local s = sget(sraw)
    if not s.tomb then stomb(P, sid, s, s, ARGV[i + 1], retention) end
    out[#out + 1] = sput(s)
  end
end
return out
