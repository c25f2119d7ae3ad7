-- place.lua: adds registrations and deletes to devices' placement
-- histories in their index bucket (step 1 of a placement; Go then brings
-- every workspace of the history in step, see keys.go).
-- KEYS[1] = the index bucket of the first device (routing). ARGV: per
-- device: its bucket's key prefix ("fl:{d:B}:"), device, n, then n
-- placements ("TS+WS" or "TS-"). On a single Redis one call carries the
-- devices of many buckets; on a cluster a call carries one bucket.
-- Returns per device {history, new flags ("1" per placement that was new,
-- "0" per one already known), the kept events as field, value pairs}.

local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i + 2])
  if not n then return redis.error_reply('ERR fleetd: malformed placement') end
  for k = 1, n do
    local e = hparse(ARGV[i + 2 + k] or '')
    if #e ~= 1 or e[1].raw ~= ARGV[i + 2 + k] then
      return redis.error_reply('ERR fleetd: malformed placement')
    end
  end
  i = i + 3 + n
end

local out = {}
i = 1
while i <= #ARGV do
  local B, d, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local IDX = B .. K_IDX
  local hl = hparse(rcall('HGET', IDX, d) or '')
  local flags = {}
  for k = 1, n do
    local e = hparse(ARGV[i + 2 + k])
    local known = false
    for _, x in ipairs(hl) do
      if x.raw == e[1].raw then known = true break end
    end
    if known then flags[k] = '0' else flags[k] = '1' end
    hl = hunion(hl, e)
  end
  local h = hstr(hl)
  rcall('HSET', IDX, d, h)
  out[#out + 1] = {h, table.concat(flags), rcall('HGETALL', B .. K_PEND .. d)}
  i = i + 3 + n
end
return out
