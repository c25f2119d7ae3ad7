-- settle.lua: marks tombstones whose session Go has seen whole at its
-- home: "~" becomes "=" and the session leaves the device's moving list,
-- only where the tombstone is unchanged since it was read.
-- KEYS[1] = fl:{w:W}:dev. ARGV: triples of session id, device, tombstone.
local P = sub(KEYS[1], 1, -4)
for i = 1, #ARGV, 3 do
  local sid, d, raw = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if rcall('HGET', P .. K_SS, sid) == raw and byte(raw, 1) == 126 then
    rcall('HSET', P .. K_SS, sid, '=' .. sub(raw, 2))
    rcall('SREM', P .. K_MV .. d, sid)
  end
end
return 0
