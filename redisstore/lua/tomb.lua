-- tomb.lua: turns copies of sessions here into tombstones pointing at
-- their home, and returns what each held (a copy found while the session's
-- home is elsewhere). KEYS[1] = fl:{w:W}:dev. ARGV: now, live bound ms,
-- retention ms, then pairs of session id, home ("" for kept). Returns per
-- session its content, "" when there is none here.
local P = sub(KEYS[1], 1, -4)
local now, bound, retention = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV, 2 do
  local sid = ARGV[i]
  local sraw = rcall('HGET', P .. 'ss', sid)
  if not sraw then
    out[#out + 1] = ''
  else
    local s = sget(sraw)
    if not s.tomb then stomb(P, sid, s, s, ARGV[i + 1], now, bound, retention) end
    out[#out + 1] = sput(s)
  end
end
return out
