-- admit.lua: makes workspaces known, in the order they first appear
-- (fl:workspaces, score: first seen ms), unless that would take the known
-- workspaces past the cap: then nothing is added and the call answers the
-- first workspace refused. KEYS[1] = fl:workspaces. ARGV: now, cap (0: no
-- cap), workspace ids.
local now, cap = ARGV[1], tonumber(ARGV[2])
local new = {}
for i = 3, #ARGV do
  if not rcall('ZSCORE', KEYS[1], ARGV[i]) then new[#new + 1] = ARGV[i] end
end
if #new == 0 then return '' end
if cap > 0 and rcall('ZCARD', KEYS[1]) + #new > cap then return new[1] end
for _, ws in ipairs(new) do rcall('ZADD', KEYS[1], 'NX', now, ws) end
return ''
