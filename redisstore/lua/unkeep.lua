-- unkeep.lua: drops the kept events of devices that have a workspace now,
-- once their sessions went home and their presence and last seen were
-- carried there: only when no session is left and presence and last seen
-- are unchanged since they were read. KEYS[1] = fl:{d:B}:idx. ARGV:
-- triples of device, presence ("" for none), last seen ("" for none).
local B = sub(KEYS[1], 1, -4)
for i = 1, #ARGV, 3 do
  local k = B .. K_PEND .. ARGV[i]
  if (rcall('HGET', k, H_ONLINE) or '') == ARGV[i + 1] and (rcall('HGET', k, H_SEEN) or '') == ARGV[i + 2] then
    local left = false
    for _, f in ipairs(rcall('HKEYS', k)) do
      if sub(f, 1, #H_SESSION) == H_SESSION then left = true break end
    end
    if not left then rcall('DEL', k, B .. K_PQ .. ARGV[i]) end
  end
end
return 1
