-- unbind.lua: clears a device's user. The user the registration named
-- stays in the record, marked unbound ("x":1), because registrations with
-- equal ts are ordered by it. KEYS[1] = fl:{w:W}:dev, ARGV[1] = device.
-- Returns the new record, or nil when the device is not placed here.
local P = sub(KEYS[1], 1, -4)
local raw = rcall('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local dev = dget(raw)
if dev.h ~= '' and howner(hparse(dev.h)) ~= wsOf(P) then return false end
local cold = cjson.decode(dev.cold)
if cold.u and cold.u ~= '' then
  cold.x = 1
  dev.cold = cjson.encode(cold)
  raw = dput(dev)
  rcall('HSET', KEYS[1], ARGV[1], raw)
end
return raw
