-- place.lua: adds registrations and deletes to devices' placement
-- histories in their index bucket (step 1 of a placement; Go then brings
-- every workspace of the history in step, see keys.go).
-- KEYS[1] = fl:{d:B}:idx. ARGV: per device: device, n, then n placements
-- ("TS+WS" or "TS-").
-- Returns per device {history, new flags ("1" per placement that was new,
-- "0" per one already known), the kept events as field, value pairs}.

local B = string.sub(KEYS[1], 1, -4)
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  if not n then return redis.error_reply('ERR fleetd: malformed placement') end
  for k = 1, n do
    local e = hparse(ARGV[i + 1 + k] or '')
    if #e ~= 1 or e[1].raw ~= ARGV[i + 1 + k] then
      return redis.error_reply('ERR fleetd: malformed placement')
    end
  end
  i = i + 2 + n
end

local out = {}
i = 1
while i <= #ARGV do
  local d, n = ARGV[i], tonumber(ARGV[i + 1])
  local hl = hparse(redis.call('HGET', KEYS[1], d) or '')
  local flags = {}
  for k = 1, n do
    local e = hparse(ARGV[i + 1 + k])
    local known = false
    for _, x in ipairs(hl) do
      if x.raw == e[1].raw then known = true break end
    end
    if known then flags[k] = '0' else flags[k] = '1' end
    hl = hunion(hl, e)
  end
  local h = hstr(hl)
  redis.call('HSET', KEYS[1], d, h)
  out[#out + 1] = {h, table.concat(flags), redis.call('HGETALL', B .. 'pend:' .. d)}
  i = i + 2 + n
end
return out
