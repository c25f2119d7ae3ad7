-- rotate.lua: stores a device's new secret hash (fl:{w:W}:sec) and takes
-- the device offline, as an offline change at the rotation: an online
-- change must be newer to bring it back. KEYS[1] = fl:{w:W}:dev. ARGV:
-- device, secret hash (hex), rotation ms. Returns 1, or 0 when the device
-- is not placed here.
local P = sub(KEYS[1], 1, -4)
local raw = rcall('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local dev = dget(raw)
if dev.h ~= '' and howner(hparse(dev.h)) ~= wsOf(P) then return 0 end
local rt = tonumber(ARGV[3])
if pnewer(dev, rt, 0) > 0 then
  dev.on, dev.ot = 0, rt
  rcall('ZREM', P .. K_ON, ARGV[1])
  rcall('HSET', KEYS[1], ARGV[1], dput(dev))
end
rcall('HSET', P .. K_SEC, ARGV[1], ARGV[2])
return 1
