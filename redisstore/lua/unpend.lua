-- unpend.lua: drops kept events that reached their home, only where they
-- are unchanged since they were read. KEYS[1] = fl:{d:B}:idx, ARGV:
-- triples of device, field, value.
local B = string.sub(KEYS[1], 1, -4)
for i = 1, #ARGV, 3 do
  local k = B .. 'pend:' .. ARGV[i]
  if redis.call('HGET', k, ARGV[i + 1]) == ARGV[i + 2] then redis.call('HDEL', k, ARGV[i + 1]) end
end
return 1
