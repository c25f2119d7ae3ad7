-- forget.lua: forgets a deleted workspace in devices' placement histories
-- (fleetd workspaces delete): drops its registrations from each history,
-- and the whole entry (and kept events) when no registration is left.
-- KEYS[1] = fl:{d:B}:idx. ARGV: workspace, then devices.
local B = sub(KEYS[1], 1, -4)
local W = ARGV[1]
for i = 2, #ARGV do
  local d = ARGV[i]
  local h = rcall('HGET', KEYS[1], d)
  if h then
    local kept, regs = {}, 0
    for _, e in ipairs(hparse(h)) do
      if e.del or e.ws ~= W then
        kept[#kept + 1] = e
        if not e.del then regs = regs + 1 end
      end
    end
    if regs == 0 then
      rcall('HDEL', KEYS[1], d)
      rcall('DEL', B .. K_PEND .. d, B .. K_PQ .. d)
    elseif #kept ~= #hparse(h) then
      rcall('HSET', KEYS[1], d, hstr(kept))
    end
  end
end
return 0
