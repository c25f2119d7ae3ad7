-- unpend.lua: drops kept events that reached their home, only where they
-- are unchanged since they were read. KEYS[1] = fl:{d:B}:idx, ARGV:
-- triples of device, field, value.
-- The field is "s:SID".
local B = sub(KEYS[1], 1, -4)
for i = 1, #ARGV, 3 do
  if rcall('HGET', B .. K_PEND .. ARGV[i], ARGV[i + 1]) == ARGV[i + 2] then
    punkeep(B, ARGV[i], sub(ARGV[i + 1], 3))
  end
end
return 1
